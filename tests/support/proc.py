"""What a child process holds, read from /proc (Linux): for leak checks and for killing one child.

The test process starts gguf-mcp (stdio: the MCP client spawns it) and llama.cpp servers as its
own children, so each is found among `children()` by its command line or by where its stdout
goes. Numbers come straight from the kernel: VmRSS for memory, /proc/<pid>/fd for descriptors.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


def children(parent: int | None = None) -> list[int]:
    """Pids whose parent is `parent` (default: this process)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def cmdline(pid: int) -> list[str]:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def wait_for_child(matches: Callable[[int], bool], timeout: float = 10.0) -> int:
    """The one child of this process for which `matches(pid)` holds; polls until it exists."""
    deadline = time.monotonic() + timeout
    while True:
        found = [pid for pid in children() if matches(pid)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise RuntimeError(f"several matching children: {found}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no matching child process after {timeout} s")
        time.sleep(0.02)  # polling /proc: there is no event for "a child was spawned"


def gguf_mcp_child(timeout: float = 10.0) -> int:
    """The gguf-mcp server this process spawned (`python -m gguf_mcp`, e.g. by the stdio client)."""
    return wait_for_child(lambda pid: "gguf_mcp" in cmdline(pid)[1:3], timeout)


def child_writing_to(path: Path, timeout: float = 10.0) -> int:
    """The child whose stdout is `path` (how `running_llama_server` hands a server its log)."""
    target = str(path.resolve())

    def writes_there(pid: int) -> bool:
        try:
            return os.readlink(f"/proc/{pid}/fd/1") == target
        except OSError:
            return False

    return wait_for_child(writes_there, timeout)


@dataclass(frozen=True)
class Usage:
    """One reading of a process's resident memory and open descriptors."""

    rss_kib: int
    fds: int
    sockets: int

    def __str__(self) -> str:
        return f"RSS {self.rss_kib / 1024:.1f} MiB, {self.fds} fds ({self.sockets} sockets)"


def usage(pid: int) -> Usage:
    rss = 0
    for line in (_PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    links = []
    for fd in (_PROC / str(pid) / "fd").iterdir():
        try:
            links.append(os.readlink(fd))
        except OSError:
            continue  # closed while we looked
    return Usage(rss, len(links), sum(link.startswith("socket:") for link in links))


def stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds; returns once the child is reaped.

    True when it exited on its own within the grace period (or had already), False when killed.
    """
    if process.poll() is not None:
        return True
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
    return True


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB (cheaper than `usage`, which also lists every descriptor)."""
    for line in (_PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ProcessLookupError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU time (utime + stime) a process has used so far."""
    fields = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
