"""Run `python -m gguf_mcp` as users do: exactly the environment given (and what any client passes,
`bridge.base_env`), nothing on its standard input."""

from __future__ import annotations

import subprocess
import sys

from tests.support.bridge import base_env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, stdout: int | None = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gguf_mcp", *args],
        env=base_env() | (env or {}),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
