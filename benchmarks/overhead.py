"""What gguf-mcp adds to each call: interleaved rounds against the SDK's floor and a direct HTTP call.

Systems, each measured in every round, in turn, in this one process (machines here are noisy, so
compare within a round, never across runs):

- `direct`: an httpx POST of the same body gguf-mcp sends, straight to the upstream (no MCP);
- `bare-stdio` / `bare-http`: a bare `MCPServer` whose `chat` tool returns a constant (the SDK floor);
- `gguf-stdio` / `gguf-http`: gguf-mcp's `chat` tool forwarding to the upstream.

Upstreams: `instant` (a raw asyncio server answering llama-server's shapes at once) and `llama`
(llama.cpp's server with the tiny test model). The bridge's own cost per call is reported as
`gguf - bare - direct`, computed per round from the medians, then the median over rounds.

    .venv/bin/python benchmarks/overhead.py [--rounds 10] [--calls 40] [--upstream instant llama]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.bridge import free_port, running_http_server  # noqa: E402
from tests.support.llama import running_llama_server  # noqa: E402
from tests.support.tiny_model import write_tiny_model  # noqa: E402

KEY = "bench-key-0000"
MESSAGES = [{"role": "user", "content": "Hello there"}]
ARGS = {"messages": MESSAGES, "max_tokens": 8}
Call = Callable[[], Awaitable[Any]]


@contextmanager
def instant_upstream() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "instant_upstream.py")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        yield f"http://127.0.0.1:{line.split()[1]}"
    finally:
        process.terminate()
        process.wait()


@contextmanager
def bare_http() -> Iterator[str]:
    port = free_port()
    args = [sys.executable, str(ROOT / "benchmarks" / "bare_server.py"), "http", str(port)]
    process = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait()


def server_env(upstream: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "GGUF_BASE_URL": upstream, "MODELSLAB_API_KEY": KEY}


@asynccontextmanager
async def systems(upstream: str, workdir: Path) -> AsyncIterator[dict[str, Call]]:
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(headers={"authorization": f"Bearer {KEY}"}))
        body = {"model": "local", **ARGS}

        async def direct() -> Any:
            response = await http.post(upstream + "/v1/chat/completions", json=body)
            response.raise_for_status()
            return response.json()

        errlog = stack.enter_context((workdir / "servers.stderr").open("a"))
        env = server_env(upstream)
        clients = {
            "bare-stdio": stdio_client(
                StdioServerParameters(command=sys.executable, args=[str(ROOT / "benchmarks" / "bare_server.py")]),
                errlog=errlog,
            ),
            "gguf-stdio": stdio_client(
                StdioServerParameters(command=sys.executable, args=["-m", "gguf_mcp"], env=env), errlog=errlog
            ),
            "bare-http": stack.enter_context(bare_http()),
            "gguf-http": stack.enter_context(running_http_server(env, workdir / "gguf-http.stderr")),
        }
        calls: dict[str, Call] = {"direct": direct}
        for name, target in clients.items():
            client = await stack.enter_async_context(Client(target))  # type: ignore[arg-type]

            async def call(client: Client = client, name: str = name) -> Any:
                result = await client.call_tool("chat", ARGS)
                if result.is_error:
                    raise RuntimeError(f"{name}: {result.content}")
                return result

            calls[name] = call
        yield calls


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(upstream: str, rounds: int, calls: int, workdir: Path) -> dict[str, Any]:
    async with systems(upstream, workdir) as named:
        for call in named.values():  # warm-up: connections, caches, first-request paths
            for _ in range(10):
                await call()
        samples: dict[str, list[float]] = {name: [] for name in named}
        per_round: dict[str, list[float]] = {name: [] for name in named}
        for _ in range(rounds):
            for name, call in named.items():
                times = []
                for _ in range(calls):
                    started = time.perf_counter()
                    await call()
                    times.append((time.perf_counter() - started) * 1000)
                samples[name] += times
                per_round[name].append(statistics.median(times))
    added = {
        transport: statistics.median(
            g - b - d
            for g, b, d in zip(
                per_round[f"gguf-{transport}"], per_round[f"bare-{transport}"], per_round["direct"], strict=True
            )
        )
        for transport in ("stdio", "http")
    }
    return {"samples": samples, "per_round": per_round, "added": added}


async def cold_start(runs: int) -> dict[str, float]:
    """Spawn to a completed initialize + tools/list, median of `runs`, gguf-mcp and bare interleaved."""
    env = server_env("http://127.0.0.1:9")
    targets = {
        "bare": StdioServerParameters(command=sys.executable, args=[str(ROOT / "benchmarks" / "bare_server.py")]),
        "gguf": StdioServerParameters(command=sys.executable, args=["-m", "gguf_mcp"], env=env),
    }
    times: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(runs):
        for name, params in targets.items():
            started = time.perf_counter()
            async with Client(params, mode="legacy") as client:
                await client.list_tools()
                times[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| upstream | system | p50 ms | p90 ms | p99 ms | calls/s (1 session) |", "|---|---|---|---|---|---|"]
    for upstream, result in results.items():
        for name, values in result["samples"].items():
            p50 = pct(values, 0.5)
            p90, p99 = pct(values, 0.9), pct(values, 0.99)
            lines.append(f"| {upstream} | {name} | {p50:.2f} | {p90:.2f} | {p99:.2f} | {1000 / p50:.0f} |")
    lines.append("")
    lines.append("| upstream | added by gguf-mcp per call, stdio | added by gguf-mcp per call, HTTP |")
    lines.append("|---|---|---|")
    for upstream, result in results.items():
        lines.append(f"| {upstream} | {result['added']['stdio']:.2f} ms | {result['added']['http']:.2f} ms |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--upstream", nargs="+", choices=["instant", "llama"], default=["instant", "llama"])
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    options = parser.parse_args()

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for upstream in options.upstream:
            if upstream == "instant":
                with instant_upstream() as url:
                    results[upstream] = await measure(url, options.rounds, options.calls, workdir)
            else:
                model = write_tiny_model(workdir / "tiny.gguf")
                with running_llama_server(model, KEY) as llama:
                    results[upstream] = await measure(llama.url, options.rounds, options.calls, workdir)
        starts = await cold_start(options.cold_starts) if options.cold_starts else {}

    print(
        f"gguf-mcp overhead, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {options.rounds} rounds x {options.calls} calls, interleaved\n"
    )
    print(table(results))
    if starts:
        print(
            f"\ncold start (spawn -> initialize + tools/list, median of {options.cold_starts}): "
            f"bare MCPServer {starts['bare']:.0f} ms, gguf-mcp {starts['gguf']:.0f} ms "
            f"({starts['gguf'] / starts['bare']:.2f}x)"
        )
    if options.json:
        options.json.write_text(json.dumps({"results": results, "cold_start": starts}, indent=1))


if __name__ == "__main__":
    anyio.run(main)
