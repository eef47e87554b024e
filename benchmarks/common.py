"""What the benchmarks share: where the checkout is, the processes they start, and /proc readings.

Benchmarks run as modules from the checkout's root, so that `benchmarks` and `tests.support`
import as packages without any `sys.path` edit:

    .venv/bin/python -m benchmarks.<name> --help

Readings of other processes come from `tests.support.proc` (the same /proc code the leak tests use).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import proc

ROOT = Path(__file__).resolve().parents[1]
GGUF_ARGV = [sys.executable, "-m", "gguf_mcp"]
_EXPORTS = Path(tempfile.gettempdir()) / "gguf-mcp-refs"


def module_argv(name: str, *args: str, python: str = sys.executable) -> list[str]:
    """`python -m benchmarks.<name> args...`; run it with `cwd=ROOT` (or PYTHONPATH=ROOT)."""
    return [python, "-m", f"benchmarks.{name}", *args]


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it); returns it.

    A thousand connections need more than the usual soft limit of 1024 descriptors.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 16)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def pct(values: list[float], q: float) -> float:
    """The `q` quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def children() -> set[int]:
    """Pids of this process's direct children."""
    return set(proc.children())


def rss_mib(pid: int) -> float:
    return proc.rss_kib(pid) / 1024


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process."""
    return proc.cpu_seconds(pid)


def _tree_sum(pids: list[int], read: Callable[[int], float]) -> float:
    """`read` of these processes and their direct children (uvicorn's workers under its supervisor), summed."""
    every = set(pids)
    for pid in pids:
        every.update(proc.children(pid))
    total = 0.0
    for pid in every:
        try:
            total += read(pid)
        except OSError:
            continue  # exited meanwhile
    return total


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU time of these processes and their direct children."""
    return _tree_sum(pids, proc.cpu_seconds)


def tree_rss_kib(pids: list[int]) -> int:
    """VmRSS of these processes and their direct children, summed."""
    return int(_tree_sum(pids, proc.rss_kib))


def source_of(ref: str | None) -> Path:
    """The directory holding the `gguf_mcp` package to run: this checkout, or `ref` exported."""
    if ref is None:
        return ROOT
    sha = subprocess.run(["git", "rev-parse", ref], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    target = _EXPORTS / sha.strip()[:12]
    if not (target / "gguf_mcp").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", ref, "gguf_mcp"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def gguf_env(upstream: str, ref: str | None = None, **extra: str) -> dict[str, str]:
    """gguf-mcp keyless on `upstream` (no MODELSLAB_API_KEY: a non-Cloud base URL needs none).

    PYTHONSAFEPATH: `python -m` would otherwise put the working directory (often this checkout)
    ahead of PYTHONPATH, and a `ref` would silently run the current code.
    """
    path = str(source_of(ref))
    return {"PATH": os.environ["PATH"], "PYTHONPATH": path, "PYTHONSAFEPATH": "1", "GGUF_BASE_URL": upstream, **extra}


@contextmanager
def listening(argv: list[str], **popen: object) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Run a helper that prints `LISTENING <port>` once ready; stop it (SIGTERM) on exit."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT, **popen)  # type: ignore[call-overload]
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("LISTENING"):
            raise RuntimeError(f"{argv} did not start: {line!r}")
        yield process, int(line.split()[1])
    finally:
        process.terminate()
        process.wait()


@contextmanager
def instant_upstream(*args: str) -> Iterator[str]:
    """`benchmarks/instant_upstream.py` in a subprocess; yields its root URL."""
    with listening(module_argv("instant_upstream", *args)) as (_, port):
        yield f"http://127.0.0.1:{port}"
