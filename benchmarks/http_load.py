"""gguf-mcp over Streamable HTTP under concurrent load: calls/s and the latency it adds.

Four configurations: stateful (the default) and stateless, each with one process and with N.
One process is `gguf-mcp --transport http`. Stateless with N is the README's
`uvicorn --factory gguf_mcp.http:create_app --workers N` on one port. Stateful with N is N
`gguf-mcp` processes with each session pinned to one, as a load balancer with sticky sessions
would do (without stickiness, stateful sessions behind several workers break). Each gets
`--sessions` concurrent official-client sessions making `--calls` `chat` calls each
(tests/support/load.py), after a warm-up. The upstream is `instant_upstream.py` (a separate
process answering at once), so the time is the bridge's. `direct` is the same concurrency of plain
httpx POSTs straight to the upstream.

All servers start first; then each round measures `direct` and every configuration in turn, and
the table shows medians over rounds. "added" is a configuration's percentile minus direct's in the
same round. "server CPU" is the CPU time the server processes spent during the measured calls, per
call (from /proc): a core serves about 1000 / that many calls per second. The load generator runs
in this process on the same machine, so on a small box it competes with the servers for CPU, and
latencies include its queueing. Loopback only; bounded by rounds x configurations x sessions x calls.

    .venv/bin/python -m benchmarks.http_load [--sessions 16] [--calls 25] [--workers 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx

from benchmarks.common import instant_upstream, pct, tree_cpu_seconds
from tests.support.bridge import (
    ServerProcess,
    base_env,
    free_port,
    gguf_mcp_argv,
    serving,
    uvicorn_workers_argv,
)
from tests.support.load import run_sessions

KEY = "bench-key-0000"
BODY = {"model": "local", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 8}


async def direct(upstream: str, sessions: int, calls: int) -> tuple[list[float], float]:
    """The floor: the same concurrency of plain POSTs to the upstream."""
    times: list[float] = []
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {KEY}"}, limits=httpx.Limits()) as http:

        async def one(_: int) -> None:
            for _ in range(calls):
                began = time.perf_counter()
                (await http.post(upstream + "/v1/chat/completions", json=BODY)).raise_for_status()
                times.append(time.perf_counter() - began)

        for _ in range(sessions):  # warm-up: open the connections
            (await http.post(upstream + "/v1/chat/completions", json=BODY)).raise_for_status()
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for s in range(sessions):
                tg.start_soon(one, s)
    return times, time.perf_counter() - started


async def measure(servers: list[ServerProcess], sessions: int, calls: int) -> dict[str, Any]:
    """Run the load; also the servers' CPU seconds spent during the measured calls."""
    pids = [server.process.pid for server in servers]
    cpu: list[float] = []
    records, wall = await run_sessions(
        [s.url for s in servers], sessions, calls, warmup=2, on_start=lambda: cpu.append(tree_cpu_seconds(pids))
    )
    return {
        "times": [r.seconds for r in records],
        "wall": wall,
        "errors": sum(1 for r in records if r.result.is_error),
        "server_cpu": tree_cpu_seconds(pids) - cpu[0],
    }


def start_servers(stack: ExitStack, mode: str, n: int, env: dict[str, str], tmp: Path) -> list[ServerProcess]:
    if mode == "stateless" and n > 1:  # one port: any worker answers any request
        port = free_port()
        argv = uvicorn_workers_argv(port, n, "--log-level", "warning")
        return [stack.enter_context(serving(argv, port, env, tmp / f"{mode}-workers.stderr"))]
    # One process, or (stateful) one per worker with each session pinned, as a sticky balancer would.
    servers = []
    for i in range(n):
        port = free_port()
        servers.append(stack.enter_context(serving(gguf_mcp_argv(port), port, env, tmp / f"{mode}-{n}-{i}.stderr")))
    return servers


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--calls", type=int, default=25)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="each configuration is measured once per round")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    options = parser.parse_args()
    sessions, calls, workers = options.sessions, options.calls, options.workers

    configs = [(mode, n) for mode in ("stateful", "stateless") for n in (1, workers)]
    floors: list[tuple[list[float], float]] = []
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {config: [] for config in configs}
    with instant_upstream() as upstream, tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        base = base_env() | {"GGUF_BASE_URL": upstream, "MODELSLAB_API_KEY": KEY}
        servers = {
            (mode, n): start_servers(
                stack, mode, n, base | ({"GGUF_MCP_STATELESS": "true"} if mode == "stateless" else {}), Path(tmp)
            )
            for mode, n in configs
        }
        for _ in range(options.rounds):  # interleaved, so a noisy neighbour hits every configuration alike
            floors.append(await direct(upstream, sessions, calls))
            for config in configs:
                runs[config].append(await measure(servers[config], sessions, calls))

    def per_round(values: list[float], digits: int = 2) -> str:
        return f"{statistics.median(values):.{digits}f}"

    d50 = [pct(times, 0.5) * 1000 for times, _ in floors]
    d99 = [pct(times, 0.99) * 1000 for times, _ in floors]
    lines = [
        f"{sessions} sessions x {calls} calls, median of {options.rounds} rounds; {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}, Python {platform.python_version()}",
        "",
        "| server | workers | calls/s | p50 ms | p99 ms | added p50 ms | added p99 ms | server CPU ms/call | errors |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| direct (no MCP) | - | {per_round([len(t) / w for t, w in floors], 0)} | {per_round(d50)} "
        f"| {per_round(d99)} | - | - | - | 0 |",
    ]
    for (mode, n), results in runs.items():
        p50 = [pct(r["times"], 0.5) * 1000 for r in results]
        p99 = [pct(r["times"], 0.99) * 1000 for r in results]
        lines.append(
            f"| {mode} | {n} | {per_round([len(r['times']) / r['wall'] for r in results], 0)} | {per_round(p50)} "
            f"| {per_round(p99)} | {per_round([a - b for a, b in zip(p50, d50, strict=True)])} "
            f"| {per_round([a - b for a, b in zip(p99, d99, strict=True)])} "
            f"| {per_round([r['server_cpu'] * 1000 / len(r['times']) for r in results])} "
            f"| {sum(r['errors'] for r in results)} |"
        )
    print("\n".join(lines))
    if options.json:
        raw = {"direct": floors, "runs": {f"{mode}-{n}": results for (mode, n), results in runs.items()}}
        options.json.write_text(json.dumps(raw))


if __name__ == "__main__":
    anyio.run(main)
