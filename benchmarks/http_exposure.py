"""Two attacks on the HTTP transport by one client, and what everyone else sees meanwhile.

- **slow headers**: `--attack` connections (default 1,100) each send half a request header and
  wait. The server runs with a soft open-file limit of 1,024 (`prlimit`), as a deployment
  under systemd's defaults does. Measured: how long `/healthz` and an authenticated MCP call
  (`list_models`, official client) take to be answered during the attack (given up after
  `--give-up` s), and how many of the attack's connections the server has closed by then and
  `--header-wait` s later.
- **sessions**: one client opens sessions (raw `initialize` POSTs with the token) until refused
  or `--max-attempts`; measured: sessions held, the server's RSS growth, and what another
  client's `initialize` gets then.

`--source DIR` runs the server from another checkout of gguf_mcp (e.g. the commit before the
fix: `git archive e613292 | tar -x -C /tmp/before`), so before and after run the same attack.
Upstream: the gateway emulator, in this process. Loopback only; bounded by the counts and time
limits above.

    .venv/bin/python -m benchmarks.http_exposure [--source /tmp/before] [--attack 1100]

Measured here (2 cores), e613292 -> the fix, defaults (256 connections, 10 s header time-out,
256 sessions, 10 min idle):

| attack | before | after |
|---|---|---|
| 1,100 half headers: /healthz answered in | not in 60 s | 1.0-1.1 s (asyncio's 1 s accept pause on EMFILE) |
| same: authenticated list_models (new session) in | not in 60 s | 0.35-1.0 s |
| same: attack connections still open 15 s later | 1,100 | 0 (255 during the probes) |
| same: server log | 3,012,798 lines (an EMFILE traceback per accept) | 3 lines |
| one client opening sessions: sessions held | 10,000 (50.6 s) | 256 (1.1 s) |
| same: server RSS growth | 385 MiB | 10.4 MiB |
| same: another client's initialize | 503 (for the 30 min idle time) | 503 (for the 10 min idle time) |
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx

from tests.support.bridge import ROOT, ServerProcess, base_env, canned_deployments, connect_http, free_port, serving
from tests.support.bridge import gguf_mcp_argv as argv_for
from tests.support.gateway import Gateway, running_gateway

TOKEN = "tok-canary-bench-exposure-4f0a8c2d"  # noqa: S105 - a canary, not a secret
HALF_A_HEADER = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: applica"
INITIALIZE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}},
}
HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "authorization": f"Bearer {TOKEN}",
}


@contextmanager
def server(gateway: Gateway, workdir: Path, source: Path, soft_files: int) -> Iterator[ServerProcess]:
    env = base_env() | canned_deployments(gateway, workdir / "d.toml", ["alpha"])
    env |= {"GGUF_MCP_AUTH_TOKEN": TOKEN, "PYTHONPATH": str(source)}
    port = free_port()
    argv = ["prlimit", f"--nofile={soft_files}:", "--", *argv_for(port)]
    with serving(argv, port, env, workdir / "stderr") as process:
        yield process


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def still_open(sockets: list[socket.socket]) -> int:
    """How many of `sockets` the server has not closed (non-blocking peek)."""
    count = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            count += sock.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


async def timed_health(root: str, give_up: float) -> float | None:
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=give_up) as http:
            response = await http.get(f"{root}/healthz")
    except httpx.HTTPError:
        return None
    return time.monotonic() - started if response.status_code == 200 else None


async def timed_call(url: str, give_up: float) -> float | None:
    started = time.monotonic()
    with anyio.move_on_after(give_up):
        try:
            async with connect_http(url, TOKEN) as client:
                result = await client.call_tool("list_models", {})
        except Exception:
            return None
        return None if result.is_error else time.monotonic() - started
    return None


async def slow_headers(args: argparse.Namespace, gateway: Gateway, workdir: Path) -> dict[str, Any]:
    with server(gateway, workdir, args.source, 1024) as process, ExitStack() as stack:
        sockets: list[socket.socket] = []
        for _ in range(args.attack):
            sock = stack.enter_context(socket.create_connection((process.host, process.port), timeout=10))
            sock.sendall(HALF_A_HEADER)
            sockets.append(sock)
        health = await timed_health(process.root, args.give_up)
        call = await timed_call(process.url, args.give_up)
        open_now = still_open(sockets)
        await anyio.sleep(args.header_wait)  # the attack goes on; let any time-out act
        open_later = still_open(sockets)
        stderr_lines = len(process.stderr().splitlines())
    return {
        "attack_connections": args.attack,
        "healthz_s": health,
        "mcp_call_s": call,
        "attack_still_open_after_probes": open_now,
        f"attack_still_open_{args.header_wait:g}s_later": open_later,
        "server_log_lines": stderr_lines,
    }


def sessions(args: argparse.Namespace, gateway: Gateway, workdir: Path) -> dict[str, Any]:
    with server(gateway, workdir, args.source, 1024) as process, httpx.Client(timeout=30) as http:
        before = rss_kib(process.process.pid)
        held, refused, started = 0, None, time.monotonic()
        for _ in range(args.max_attempts):
            response = http.post(process.url, json=INITIALIZE, headers=HEADERS)
            if response.status_code != 200:
                refused = response.status_code
                break
            held += 1
        elapsed = time.monotonic() - started
        after = rss_kib(process.process.pid)
        other = http.post(process.url, json=INITIALIZE, headers=HEADERS).status_code
    return {
        "sessions_held": held,
        "refused_with": refused,
        "seconds_to_open": round(elapsed, 1),
        "rss_growth_mib": round((after - before) / 1024, 1),
        "another_client_gets": other,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout whose gguf_mcp the server runs")
    parser.add_argument("--attack", type=int, default=1100)
    parser.add_argument("--give-up", type=float, default=60.0)
    parser.add_argument("--header-wait", type=float, default=15.0)
    parser.add_argument("--max-attempts", type=int, default=11_000)
    parser.add_argument("--only", choices=["slow-headers", "sessions"])
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.attack + 1024)), hard))
    os.chdir(args.source)  # `python -m gguf_mcp` imports from its working directory first
    report: dict[str, Any] = {"source": str(args.source)}
    with running_gateway() as gateway, tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "slow-headers"):
            (Path(tmp) / "a").mkdir()
            report["slow_headers"] = await slow_headers(args, gateway, Path(tmp) / "a")
        if args.only in (None, "sessions"):
            (Path(tmp) / "b").mkdir()
            report["sessions"] = sessions(args, gateway, Path(tmp) / "b")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    anyio.run(main)
