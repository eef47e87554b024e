"""What one hostile tool call costs the server: peak memory (VmHWM) for calls built to be expensive.

Each case starts a fresh gguf-mcp over stdio (the current tree, and each `--ref` exported from git
beside it), sends the handshake, then the case's calls as raw JSON-RPC lines, waits for every
answer, and reads the server's peak resident memory from /proc. The upstream is a port nobody
listens on (loopback): a call that is refused never sends anything, and one that is accepted fails
fast, so what is measured is the cost of taking the call in.

Cases (issue 13, point 8):
- `idle`: the handshake only (the baseline the others are read against);
- `messages-140k`: one `chat` call of 140,000 tiny messages (about 4 MiB of JSON);
- `messages-140k-x8`: eight of them in flight at once;
- `line-15mb`: one request line of 15 MB (a 15 MB string in a message).

    .venv/bin/python -m benchmarks.hostile_calls [--ref e613292]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.support.proc import stop

ROOT = Path(__file__).resolve().parents[1]
INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def chat(call_id: int, messages: list[dict[str, Any]]) -> dict[str, Any]:
    arguments = {"messages": messages, "max_tokens": 1}
    return {"jsonrpc": "2.0", "id": call_id, "method": "tools/call", "params": {"name": "chat", "arguments": arguments}}


def cases() -> dict[str, list[dict[str, Any]]]:
    tiny = [{"role": "user", "content": "x"}] * 140_000
    return {
        "idle": [],
        "messages-140k": [chat(1, tiny)],
        "messages-140k-x8": [chat(i, tiny) for i in range(1, 9)],
        "line-15mb": [chat(1, [{"role": "user", "content": "x" * 15_000_000}])],
    }


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def measure(pythonpath: Path, calls: list[dict[str, Any]]) -> tuple[float, int]:
    """(peak MiB, answers received) for one fresh server taking `calls`."""
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(pythonpath),
        "PYTHONSAFEPATH": "1",
        "GGUF_BASE_URL": f"http://127.0.0.1:{dead_port()}",
        "GGUF_MCP_MAX_RETRIES": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gguf_mcp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(json.dumps(INIT).encode() + b"\n" + json.dumps(INITIALIZED).encode() + b"\n")
        process.stdin.flush()
        process.stdout.readline()
        payload = b"".join(json.dumps(c).encode() + b"\n" for c in calls)
        process.stdin.write(payload)
        process.stdin.flush()
        answered = sum(1 for _ in calls if process.stdout.readline())
        return peak_kib(process.pid) / 1024, answered
    finally:
        process.stdin.close()
        stop(process)


def export(ref: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref, "gguf_mcp"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", action="append", default=[], help="also measure gguf-mcp as of this git ref")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        systems = {"now": ROOT} | {ref: export(ref, Path(scratch) / ref) for ref in args.ref}
        print("| case | " + " | ".join(f"{name}: peak MiB (answers)" for name in systems) + " |")
        print("|---|" + "---|" * len(systems))
        for case, calls in cases().items():
            row = [
                f"{peak:.0f} ({answered}/{len(calls)})"
                for peak, answered in (measure(p, calls) for p in systems.values())
            ]
            print(f"| {case} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
