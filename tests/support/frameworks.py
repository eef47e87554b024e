"""A virtual environment per agent framework, pinned, built once per machine and cached.

`ensure_framework(name)` returns the Python of
``${GGUF_MCP_CACHE:-$HOME/.cache/gguf-mcp}/framework-<name>-<hash>/``. The frameworks never
share gguf-mcp's environment: LangChain's MCP adapters require `mcp` 1.x while gguf-mcp needs
2.x, and the others are kept apart too, so each snippet runs with exactly what a user of that
framework installs (and gguf-mcp's own venv stays lean).

`OVERLAYS` are environments of another kind, built the same way: a pinned package alone (no
dependencies) in front of this venv's packages, e.g. the newest uvicorn under gguf-mcp.

Same recipe as `tests/support/node_tools.py`: the hash covers everything that decides the
install (`FRAMEWORKS`, `EXCLUDE_NEWER`, the Python version, `LAYOUT`); uv resolves as the index
was at `EXCLUDE_NEWER` (its ``--exclude-newer``, npm's ``--before``); the install goes to a
temporary sibling renamed into place once verified, under a file lock. uv is the pinned one of
the test extra; its cache (``uv-cache`` in the same directory) is shared with tests/test_bundle.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import site
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from tests.support.node_tools import _exclusive_lock, cache_root

FRAMEWORKS: Mapping[str, tuple[str, ...]] = {
    "openai-agents": ("openai-agents==0.24.0",),
    "pydantic-ai": ("pydantic-ai-slim[mcp]==2.68.0",),
    # Resolves mcp 1.30.0: it cannot live beside gguf-mcp (mcp 2.x).
    "langchain": ("langchain-mcp-adapters==0.3.2",),
    # Only for how it turns an MCP tool schema into its own tool (tests/test_schema_portability.py).
    "llama-index": ("llama-index-tools-mcp==0.6.0",),
}
OVERLAYS: Mapping[str, tuple[str, ...]] = {
    # GuardedH11Protocol extends uvicorn's HTTP/1.1 protocol, which is not uvicorn's public API:
    # the suite runs its guards under both lines pyproject.toml's range allows, this venv's and the
    # other one (tests/test_http_limits.py). 0.55 requires Python >= 3.11.
    "uvicorn-0.54": ("uvicorn==0.54.0",),
    "uvicorn-0.55": ("uvicorn==0.55.0",),
}
"""Environments holding only these (no dependencies), in front of this venv's packages."""
EXCLUDE_NEWER = "2026-11-25T00:00:00Z"
"""Resolve as the package index was at this instant (uv ``--exclude-newer``)."""
LAYOUT = 1
"""Bump when the install recipe below changes."""
INSTALL_TIMEOUT_S = 300.0
UV = Path(sys.executable).parent / "uv"
_MARKER = "framework.json"


class FrameworkInstallError(RuntimeError):
    """A framework's environment could not be built."""


def _requirements(name: str) -> tuple[str, ...]:
    return OVERLAYS[name] if name in OVERLAYS else FRAMEWORKS[name]


def install_key(name: str) -> str:
    spec = {
        "layout": LAYOUT,
        "requirements": _requirements(name),
        "exclude_newer": EXCLUDE_NEWER,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "overlay_of": sys.prefix if name in OVERLAYS else None,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def uv_env() -> dict[str, str]:
    """The environment for the pinned uv: its cache under ours, never a Python download."""
    return dict(os.environ) | {"UV_CACHE_DIR": str(cache_root() / "uv-cache"), "UV_PYTHON_DOWNLOADS": "never"}


def _python(directory: Path) -> Path:
    return directory / "bin" / "python"


def _complete(directory: Path) -> bool:
    return (directory / _MARKER).is_file() and _python(directory).exists()


def _uv(args: list[str], log: Path) -> None:
    with log.open("a") as out:
        try:
            proc = subprocess.run(
                [str(UV), *args],
                env=uv_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise FrameworkInstallError(f"uv {args[0]} timed out after {INSTALL_TIMEOUT_S:.0f}s; see {log}") from None
    if proc.returncode != 0:
        raise FrameworkInstallError(f"uv {' '.join(args)} failed (exit {proc.returncode}):\n{log.read_text()[-3000:]}")


def _install(name: str, target: Path) -> None:
    work = target.with_name(f"{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    log = target.with_name(f"{target.name}.log")
    log.write_text("")
    try:
        started = time.monotonic()
        # --relocatable: the environment is built under `work`, then renamed to `target`.
        _uv(["venv", "--quiet", "--relocatable", "--python", sys.executable, str(work)], log)
        # An overlay's pins are exact and take no dependencies: nothing to hold at a date.
        resolution = ["--no-deps"] if name in OVERLAYS else ["--exclude-newer", EXCLUDE_NEWER]
        _uv(["pip", "install", "--quiet", "--python", str(_python(work)), *resolution, *_requirements(name)], log)
        if name in OVERLAYS:
            _lay_over_this_venv(work)
        frozen = subprocess.run(
            [str(UV), "pip", "freeze", "--python", str(_python(work))],
            env=uv_env(),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()
        marker = {
            "key": install_key(name),
            "requirements": _requirements(name),
            "exclude_newer": EXCLUDE_NEWER,
            "installed": frozen,
            "install_seconds": round(time.monotonic() - started, 1),
        }
        (work / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        os.rename(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _lay_over_this_venv(directory: Path) -> None:
    """Put this venv's packages behind `directory`'s own (a path file: after its site-packages)."""
    (own,) = directory.glob("lib/python3*/site-packages")
    (own / "gguf-mcp-venv.pth").write_text("".join(f"{path}\n" for path in site.getsitepackages()))


def ensure_framework(name: str) -> Path:
    """The Python of `name`'s environment, building it first if this machine has none."""
    root = cache_root()
    target = root / f"framework-{name}-{install_key(name)}"
    if _complete(target):
        return _python(target)
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(root / f"{target.name}.lock", INSTALL_TIMEOUT_S * 2):
        if not _complete(target):
            for stale in root.glob(f"{target.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if target.exists():
                shutil.rmtree(target)
            _install(name, target)
    if not _complete(target):
        raise FrameworkInstallError(f"{target} is incomplete right after installing it")
    return _python(target)


def installed_versions(python: Path) -> list[str]:
    """``name==version`` of everything in the environment of `python` (from the install record)."""
    record = json.loads((python.parent.parent / _MARKER).read_text())
    return list(record["installed"])
