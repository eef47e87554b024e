"""Run `python -m gguf_mcp` as users do, with exactly the environment given (and PATH)."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "gguf_mcp", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
