"""gguf-mcp against the SDK's floor, a direct HTTP call and the fastest peer: the README's performance table.

Systems, each measured in every round, in turn, in this one process (machines here are noisy, so
compare within a round, never across runs):

- `direct`: an httpx POST of the body gguf-mcp sends, straight to the upstream (no MCP);
- `bare-*`: a bare `MCPServer` whose `chat` tool returns a constant (the SDK's floor, no upstream);
- `gguf-*`: gguf-mcp's `chat` tool forwarding to the upstream; `gguf-stdio-stream` is the same
  call with a progress token (so it streams from the upstream and reports progress);
- `peer-stdio`: npm `llama-mcp-server` 0.1.1 on Node 22 (`benchmarks/peer.py`), tool `llama_chat`;
- transports: `stdio`, Streamable HTTP stateful (`http`) and stateless (`http-sl`,
  `GGUF_MCP_STATELESS=true`; the bare server with `stateless_http=True`).

Every MCP call goes through the official Python client (`mcp` 2.3, `mode="legacy"`, i.e. the
initialize handshake the peer also speaks), with the same arguments for every system
(`max_tokens: 8, temperature: 0.7, top_p: 0.9`: the peer always sends its defaults for the last
two, so everyone asks the upstream for the same work). Upstreams run keyless, because the peer
sends no key:

- `instant`: a raw asyncio server answering llama-server's shapes at once
  (`benchmarks/instant_upstream.py`); it counts TCP connections, so each system's count of
  connections opened during the timed rounds is reported (a healthy pool opens one);
- `llama`: llama.cpp's server (xllamacpp) with the tiny test model, one thread.

Phases: single-session latency (rounds x calls, interleaved; with the server process's CPU per
call from /proc and this process's, i.e. the client's), throughput (`--sessions` concurrent
sessions x `--session-calls` calls each: one stdio server process per session, one HTTP server
for all its sessions), idle VmRSS of the server processes after warm-up, cold start (spawn ->
initialize + tools/list, and VmRSS right then; and spawn -> the first `chat` answered, from the
instant upstream), tools/list size, and a pool check: each system
through a TCP relay that counts its connections, to the instant upstream closing connections
after 100 answers without saying so and to llama.cpp's server (which closes one after 100
requests and after every streamed answer), gguf-mcp streaming every 5th call.

`--refs REF ...` adds gguf-mcp as of each git REF (its `gguf_mcp/` exported to a temporary
directory) to every gguf-mcp system, measured in the same rounds: before and after a change.

    .venv/bin/python -m benchmarks.overhead [--rounds 10] [--calls 40] [--upstream instant llama]
    .venv/bin/python -m benchmarks.overhead --refs HEAD~3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import httpx
from anyio.abc import SocketAttribute, SocketStream
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from benchmarks.common import (
    GGUF_ARGV,
    ROOT,
    children,
    cpu_seconds,
    gguf_env,
    instant_upstream,
    module_argv,
    pct,
    rss_mib,
)
from benchmarks.peer import CHAT_TOOL, Peer, ensure_peer
from tests.support.bridge import free_port, serving
from tests.support.llama import running_llama_server
from tests.support.tiny_model import write_tiny_model

MESSAGES = [{"role": "user", "content": "Hello there"}]
ARGS: dict[str, Any] = {"messages": MESSAGES, "max_tokens": 8, "temperature": 0.7, "top_p": 0.9}
BODY = {"model": "local", **ARGS}  # what gguf-mcp sends for ARGS, key for key
ALL_SYSTEMS = (
    "direct",
    "bare-stdio",
    "gguf-stdio",
    "gguf-stdio-stream",
    "peer-stdio",
    "bare-http",
    "gguf-http",
    "bare-http-sl",
    "gguf-http-sl",
)
Call = Callable[[], Awaitable[None]]


# --- Processes -----------------------------------------------------------------------------------


@contextmanager
def bare_http(stateless: bool, stderr: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    argv = module_argv("bare_server", "http", str(port), *(["stateless"] if stateless else []))
    with stderr.open("ab") as err:
        process = subprocess.Popen(argv, stderr=err, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # polling a subprocess's port: there is no event to wait on
        yield f"http://127.0.0.1:{port}/mcp", process.pid
    finally:
        process.terminate()
        process.wait()


def bare_params() -> StdioServerParameters:
    command, *args = module_argv("bare_server")
    return StdioServerParameters(command=command, args=args, env={"PYTHONPATH": str(ROOT)}, cwd=ROOT)


def gguf_params(upstream: str, ref: str | None = None) -> StdioServerParameters:
    command, *args = GGUF_ARGV
    return StdioServerParameters(command=command, args=args, env=gguf_env(upstream, ref))


def split(name: str) -> tuple[str, str | None]:
    """`gguf-stdio@abc123` -> (`gguf-stdio`, `abc123`)."""
    base, _, ref = name.partition("@")
    return base, ref or None


def server_kind(name: str) -> str:
    """`gguf-http-sl@ref` -> `gguf@ref`: the server, whatever the transport."""
    base, ref = split(name)
    return base.split("-")[0] + (f"@{ref}" if ref else "")


def peer_params(peer: Peer, upstream: str) -> StdioServerParameters:
    command, args = peer.command()
    return StdioServerParameters(command=command, args=args, env=peer.env(upstream))


# --- Systems -------------------------------------------------------------------------------------


@dataclass
class System:
    name: str
    sessions: list[Call]
    """One call per session; the latency rounds use the first."""
    pids: list[int] = field(default_factory=list)
    """Server processes: one per stdio session, one for an HTTP server."""
    streamed: list[Call] = field(default_factory=list)
    """gguf-mcp only: the same call with a progress token, per session."""


def _mcp_call(client: Client, name: str, tool: str, progress: bool = False) -> Call:
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        pass

    async def call() -> None:
        result = await client.call_tool(tool, ARGS, progress_callback=on_progress if progress else None)
        if result.is_error:
            raise RuntimeError(f"{name}: {result.content}")

    return call


def _direct_call(http: httpx.AsyncClient, url: str) -> Call:
    async def call() -> None:
        try:
            response = await http.post(url, json=BODY)
        except httpx.RemoteProtocolError:  # llama-server closed the kept-alive connection: resend once
            response = await http.post(url, json=BODY)
        response.raise_for_status()
        response.json()

    return call


async def open_systems(
    stack: AsyncExitStack, names: list[str], upstream: str, peer: Peer | None, sessions: int, mode: str, workdir: Path
) -> dict[str, System]:
    """Start every system in `names` with `sessions` sessions each (stdio: a process per session).

    `gguf-stdio-stream` is the first `gguf-stdio` session calling with a progress token; a name
    with `@REF` runs gguf-mcp as of git REF.
    """
    errlog = stack.enter_context((workdir / "servers.stderr").open("a"))
    systems: dict[str, System] = {}

    async def stdio(name: str, params: StdioServerParameters, tool: str = "chat") -> System:
        system = System(name, [])
        for _ in range(sessions):
            before = children()
            client = await stack.enter_async_context(Client(stdio_client(params, errlog=errlog), mode=mode))
            system.pids += sorted(children() - before)
            system.sessions.append(_mcp_call(client, name, tool))
            if name.startswith("gguf"):
                system.streamed.append(_mcp_call(client, name, tool, progress=True))
        return system

    async def http(name: str, url: str, pid: int) -> System:
        system = System(name, [], [pid])
        for _ in range(sessions):
            client = await stack.enter_async_context(Client(url, mode=mode))
            system.sessions.append(_mcp_call(client, name, "chat"))
            if name.startswith("gguf"):
                system.streamed.append(_mcp_call(client, name, "chat", progress=True))
        return system

    for name in names:
        base, ref = split(name)
        if name == "direct":
            http_client = await stack.enter_async_context(httpx.AsyncClient())
            systems[name] = System(name, [_direct_call(http_client, upstream + "/v1/chat/completions")] * sessions)
        elif base == "bare-stdio":
            systems[name] = await stdio(name, bare_params())
        elif base == "gguf-stdio":
            systems[name] = await stdio(name, gguf_params(upstream, ref))
        elif base == "gguf-stdio-stream":
            base_system = systems[name.replace("-stream", "")]
            systems[name] = System(name, base_system.streamed[:1], base_system.pids[:1])
        elif name == "peer-stdio":
            assert peer is not None
            systems[name] = await stdio(name, peer_params(peer, upstream), CHAT_TOOL)
        elif name in ("bare-http", "bare-http-sl"):
            url, pid = stack.enter_context(bare_http(name.endswith("-sl"), workdir / f"{name}.stderr"))
            systems[name] = await http(name, url, pid)
        elif base in ("gguf-http", "gguf-http-sl"):
            port = free_port()
            env = gguf_env(upstream, ref, GGUF_MCP_STATELESS="true" if base.endswith("-sl") else "false")
            argv = [*GGUF_ARGV, "--transport", "http", "--port", str(port)]
            server = stack.enter_context(serving(argv, port, env, workdir / f"{name}.stderr"))
            systems[name] = await http(name, server.url, server.process.pid)
        else:
            raise ValueError(name)
    return systems


# --- Measuring -----------------------------------------------------------------------------------


async def upstream_stats(http: httpx.AsyncClient, upstream: str) -> dict[str, int] | None:
    """The instant upstream's connection and request counts (None from llama.cpp's server)."""
    try:
        response = await http.get(upstream + "/_stats")
        data = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return data if isinstance(data, dict) and "connections" in data else None


async def throughput(system: System, calls: int) -> float:
    """Calls per second with every session calling `calls` times at once."""

    async def run(call: Call) -> None:
        for _ in range(calls):
            await call()

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for call in system.sessions:
            tg.start_soon(run, call)
    return len(system.sessions) * calls / (time.perf_counter() - started)


async def measure(
    upstream: str, names: list[str], peer: Peer | None, options: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        named = await open_systems(stack, names, upstream, peer, options.sessions, options.mode, workdir)
        stats_http = await stack.enter_async_context(httpx.AsyncClient())
        counting = await upstream_stats(stats_http, upstream) is not None
        for system in named.values():  # warm-up: connections, caches, first-request paths
            for i, call in enumerate(system.sessions):
                for _ in range(10 if i == 0 else 3):
                    await call()
        await anyio.sleep(1)  # idle: let whatever the warm-up left pending settle
        servers = {name: s.pids for name, s in named.items() if s.pids and "-stream" not in name}
        rss_warm = {name: [rss_mib(pid) for pid in pids] for name, pids in servers.items()}

        samples: dict[str, list[float]] = {name: [] for name in named}
        per_round: dict[str, list[float]] = {name: [] for name in named}
        connections: dict[str, int] = dict.fromkeys(named, 0)
        cpu: dict[str, list[float]] = {name: [] for name, s in named.items() if s.pids}
        client_cpu: dict[str, list[float]] = {name: [] for name in named}
        for _ in range(options.rounds):
            for name, system in named.items():
                before = await upstream_stats(stats_http, upstream) if counting else None
                call = system.sessions[0]
                server = system.pids[0] if system.pids else None
                cpu_before = cpu_seconds(server) if server else 0.0
                client_before = time.process_time()
                times = []
                for _ in range(options.calls):
                    started = time.perf_counter()
                    await call()
                    times.append((time.perf_counter() - started) * 1000)
                client_cpu[name].append((time.process_time() - client_before) * 1000)
                samples[name] += times
                per_round[name].append(statistics.median(times))
                if server:
                    cpu[name].append((cpu_seconds(server) - cpu_before) * 1000)
                after = await upstream_stats(stats_http, upstream) if counting else None
                if before and after:
                    connections[name] += after["connections"] - before["connections"]

        rates: dict[str, list[float]] = {name: [] for name in named if "-stream" not in name}
        for _ in range(options.throughput_rounds):
            for name in rates:
                rates[name].append(await throughput(named[name], options.session_calls))
        rss_after = {name: [rss_mib(pid) for pid in pids] for name, pids in servers.items()}
    return {
        "samples": samples,
        "per_round": per_round,
        "connections": connections if counting else None,
        "cpu": cpu,
        "client_cpu": client_cpu,
        "rates": rates,
        "rss_warm": rss_warm,
        "rss_after": rss_after,
    }


async def cold_start(runs: int, peer: Peer | None, refs: list[str], upstream: str) -> dict[str, Any]:
    """Spawn to a completed initialize + tools/list, then to the first `chat` answered (from the
    instant `upstream`); medians of `runs`, servers interleaved."""
    targets = {"bare": (bare_params(), "chat"), "gguf": (gguf_params(upstream), "chat")}
    for ref in refs:
        targets[f"gguf@{ref}"] = (gguf_params(upstream, ref), "chat")
    if peer is not None:
        targets["peer"] = (peer_params(peer, upstream), "llama_chat")
    times: dict[str, list[float]] = {name: [] for name in targets}
    first_call: dict[str, list[float]] = {name: [] for name in targets}
    rss: dict[str, list[float]] = {name: [] for name in targets}
    sizes: dict[str, tuple[int, int]] = {}
    for _ in range(runs):
        for name, (params, tool) in targets.items():
            before = children()
            started = time.perf_counter()
            async with Client(params, mode="legacy") as client:
                listed = await client.list_tools()
                times[name].append((time.perf_counter() - started) * 1000)
                rss[name] += [rss_mib(pid) for pid in children() - before]
                await _mcp_call(client, name, tool)()
                first_call[name].append((time.perf_counter() - started) * 1000)
            tools = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in listed.tools]
            sizes[name] = (len(tools), len(json.dumps(tools, separators=(",", ":"))))
    return {
        "ms": {name: statistics.median(t) for name, t in times.items()},
        "first_call_ms": {name: statistics.median(t) for name, t in first_call.items()},
        "all_ms": times,
        "rss": {name: statistics.median(r) for name, r in rss.items() if r},
        "tools": sizes,
    }


@asynccontextmanager
async def counting_proxy(target: str) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP relay to `target` (http://host:port) that counts the connections it accepts."""
    host, port = target.removeprefix("http://").rsplit(":", 1)
    accepted = [0]

    async def pipe(source: SocketStream, sink: SocketStream) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        finally:
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                await sink.send_eof()

    async def handle(client: SocketStream) -> None:
        accepted[0] += 1
        async with client, await anyio.connect_tcp(host, int(port)) as server, anyio.create_task_group() as tg:
            tg.start_soon(pipe, client, server)
            tg.start_soon(pipe, server, client)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    local_port = listener.extra(SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield f"http://127.0.0.1:{local_port}", accepted
        tg.cancel_scope.cancel()


async def pool_check(upstream: str, names: list[str], peer: Peer | None, calls: int, workdir: Path) -> dict[str, Any]:
    """TCP connections each system opens for `calls` calls; gguf-mcp streams every 5th (progress token)."""
    found: dict[str, Any] = {}
    for name in names:
        logs = workdir / f"pool-{name}"
        logs.mkdir(exist_ok=True)
        async with counting_proxy(upstream) as (url, accepted), AsyncExitStack() as stack:
            system = (await open_systems(stack, [name], url, peer, 1, "legacy", logs))[name]
            failures: list[str] = []
            streamed = 0
            for i in range(calls):
                call = system.sessions[0]
                if system.streamed and i % 5 == 4:
                    call, streamed = system.streamed[0], streamed + 1
                try:
                    await call()
                except Exception as exc:
                    failures.append(repr(exc)[:200])
        retries = sum(p.read_text(errors="replace").count("retrying") for p in logs.glob("*.stderr"))
        found[name] = {
            "calls": calls,
            "streamed": streamed,
            "connections": accepted[0],
            "failures": failures,
            "retries_logged": retries,
        }
    return found


# --- Report --------------------------------------------------------------------------------------


def spread(values: list[float], digits: int = 2) -> str:
    """Median [min-max]."""
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def ratios(per_round: dict[str, list[float]], a: str, b: str) -> list[float]:
    if a not in per_round or b not in per_round:
        return []
    return [x / y for x, y in zip(per_round[a], per_round[b], strict=True)]


def latency_table(upstream: str, result: dict[str, Any]) -> list[str]:
    samples, per_round, connections = result["samples"], result["per_round"], result["connections"]
    cpu, client_cpu = result["cpu"], result["client_cpu"]
    lines = [
        f"Per call, one session, `{upstream}` upstream (ms; ratio = median of per-round p50 ratios [min-max]; "
        "CPU per call: the server process's utime + stime (10 ms ticks, so summed over all rounds), and this "
        "benchmark process's (the official client, or httpx for direct))",
        "",
        "| system | p50 | p90 | p99 | / direct | / peer-stdio | server CPU ms/call | client CPU ms/call "
        "| upstream connections opened |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, values in samples.items():
        versus = spread(ratios(per_round, name, "direct")) if name != "direct" else "-"
        peer = spread(ratios(per_round, name, "peer-stdio")) if name != "peer-stdio" else "-"
        opened = str(connections[name]) if connections is not None and not name.startswith("bare") else "-"
        calls = len(values)
        server_cpu = f"{sum(cpu[name]) / calls:.2f}" if cpu.get(name) else "-"
        own_cpu = f"{sum(client_cpu[name]) / calls:.2f}"
        p50, p90, p99 = (pct(values, q) for q in (0.5, 0.9, 0.99))
        lines.append(
            f"| {name} | {p50:.2f} | {p90:.2f} | {p99:.2f} | {versus} | {peer} | {server_cpu} | {own_cpu} | {opened} |"
        )
    return lines


def breakdown_lines(result: dict[str, Any]) -> list[str]:
    """Per transport: direct, the SDK's floor (bare), what gguf-mcp adds (gguf - bare - direct)."""
    per_round = result["per_round"]
    lines = [
        "| system | direct HTTP | SDK floor (bare MCPServer) | gguf-mcp's own (gguf - bare - direct) | total |",
        "|---|---|---|---|---|",
    ]
    for name in per_round:
        base, _ = split(name)
        transport = base.removeprefix("gguf-")
        if not base.startswith("gguf-") or transport.endswith("stream"):
            continue
        gguf, bare, direct = per_round[name], per_round.get(f"bare-{transport}"), per_round.get("direct")
        if not (bare and direct):
            continue
        added = [g - b - d for g, b, d in zip(gguf, bare, direct, strict=True)]
        med = statistics.median
        lines.append(
            f"| {name} | {med(direct):.2f} ms | {med(bare):.2f} ms | {spread(added)} ms | {med(gguf):.2f} ms |"
        )
    return lines


def throughput_lines(results: dict[str, dict[str, Any]], sessions: int, calls: int) -> list[str]:
    upstreams = list(results)
    lines = [
        f"Throughput, {sessions} concurrent sessions x {calls} calls (calls/s, median [min-max] over rounds; "
        "stdio: one server process per session; HTTP: one server process)",
        "",
        "| system | " + " | ".join(upstreams) + " | " + " | ".join(f"/ peer-stdio, {u}" for u in upstreams) + " |",
        "|---|" + "---|" * 2 * len(upstreams),
    ]
    names = list(dict.fromkeys(n for r in results.values() for n in r["rates"]))
    for name in names:
        cells = [spread(results[u]["rates"].get(name, []), 0) for u in upstreams]
        for u in upstreams:
            rates = results[u]["rates"]
            if name in rates and "peer-stdio" in rates and name != "peer-stdio":
                cells.append(spread([x / y for x, y in zip(rates[name], rates["peer-stdio"], strict=True)]))
            else:
                cells.append("-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def footprint_lines(results: dict[str, dict[str, Any]], starts: dict[str, Any]) -> list[str]:
    ms, tools = starts.get("ms", {}), starts.get("tools", {})
    first, started_rss = starts.get("first_call_ms", {}), starts.get("rss", {})
    lines = [
        "| server | cold start, median (spawn to initialize + tools/list) | / bare | spawn to first chat answered "
        "| / bare | VmRSS just started | - bare | tools/list |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, value in ms.items():
        ratio = f"{value / ms['bare']:.2f}x" if "bare" in ms else "-"
        call_ratio = f"{first[kind] / first['bare']:.2f}x" if "bare" in first else "-"
        count, size = tools[kind]
        mib = started_rss.get(kind)
        delta = f"{mib - started_rss['bare']:+.1f} MiB" if mib is not None and "bare" in started_rss else "-"
        shown = f"{mib:.1f} MiB" if mib is not None else "-"
        lines.append(
            f"| {kind} | {value:.0f} ms | {ratio} | {first[kind]:.0f} ms | {call_ratio} | {shown} | {delta} "
            f"| {size:,} chars ({count} tools) |"
        )
    lines += [
        "",
        "| server process | idle VmRSS after warm-up (median over processes) | after the run | - bare (warm) |",
        "|---|---|---|---|",
    ]
    rss: dict[str, tuple[list[float], list[float]]] = {}
    for result in results.values():
        for name, values in result["rss_warm"].items():
            warm, after = rss.setdefault(name, ([], []))
            warm += values
            after += result["rss_after"][name]
    for name, (warm, after) in rss.items():
        base, _ = split(name)
        bare = rss.get("bare-" + base.split("-", 1)[1])
        delta = f"{statistics.median(warm) - statistics.median(bare[0]):+.1f} MiB" if bare else "-"
        lines.append(f"| {name} | {statistics.median(warm):.1f} MiB | {statistics.median(after):.1f} MiB | {delta} |")
    return lines


def readme_table(results: dict[str, dict[str, Any]], starts: dict[str, Any], sessions: int, calls: int) -> list[str]:
    """The README's one table: p50 per call (one session), calls/s, cold start, idle RSS, tools/list."""
    ups = list(results)
    head = "| system | " + " | ".join(f"per call p50, {u}" for u in ups)
    head += " | " + " | ".join(f"calls/s {sessions}x{calls}, {u}" for u in ups)
    head += " | cold start | idle RSS | tools/list |"
    lines = [head, "|---|" + "---|" * (2 * len(ups) + 3)]
    ms, tools = starts.get("ms", {}), starts.get("tools", {})
    names = list(dict.fromkeys(n for r in results.values() for n in r["samples"]))
    for name in names:
        cells = [
            f"{pct(results[u]['samples'][name], 0.5):.2f} ms" if name in results[u]["samples"] else "-" for u in ups
        ]
        cells += [
            f"{statistics.median(results[u]['rates'][name]):.0f}" if name in results[u]["rates"] else "-" for u in ups
        ]
        kind, stdio = server_kind(name), split(name)[0].endswith("-stdio")
        cells.append(f"{ms[kind] / 1000:.2f} s" if stdio and kind in ms else "-")
        rss = [v for u in ups for v in results[u]["rss_warm"].get(name, [])]
        cells.append(f"{statistics.median(rss):.0f} MiB" if rss else "-")
        cells.append(f"{tools[kind][1]:,} chars ({tools[kind][0]} tools)" if stdio and kind in tools else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def pool_lines(pools: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| upstream | system | calls (streamed) | TCP connections opened | failed calls | retries logged |",
        "|---|---|---|---|---|---|",
    ]
    for upstream, found in pools.items():
        for name, r in found.items():
            lines.append(
                f"| {upstream} | {name} | {r['calls']} ({r['streamed']}) | {r['connections']} | "
                f"{len(r['failures'])} | {r['retries_logged']} |"
            )
    return lines


# --- Main ----------------------------------------------------------------------------------------


def system_names(systems: list[str], refs: list[str]) -> list[str]:
    """The selected systems in table order, each gguf-mcp one followed by its older versions."""
    names = []
    for name in ALL_SYSTEMS:
        if name in systems:
            names.append(name)
            if name.startswith("gguf-"):
                names += [f"{name}@{ref}" for ref in refs]
    return names


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=40, help="calls per system per round (latency)")
    parser.add_argument("--upstream", nargs="+", choices=["instant", "llama"], default=["instant", "llama"])
    parser.add_argument("--systems", nargs="+", choices=ALL_SYSTEMS, default=list(ALL_SYSTEMS))
    parser.add_argument("--refs", nargs="*", default=[], help="also gguf-mcp as of these git refs (before/after)")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent sessions (throughput)")
    parser.add_argument("--session-calls", type=int, default=50, help="calls per session (throughput)")
    parser.add_argument("--throughput-rounds", type=int, default=3)
    parser.add_argument("--mode", default="legacy", help="the client's connect mode: legacy or auto")
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument("--pool-calls", type=int, default=250, help="0 skips the pool check")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    options = parser.parse_args()
    names = system_names(options.systems, options.refs)
    if "gguf-stdio-stream" in names and "gguf-stdio" not in names:
        parser.error("gguf-stdio-stream needs gguf-stdio")
    peer = ensure_peer() if "peer-stdio" in names else None

    results: dict[str, dict[str, Any]] = {}
    pools: dict[str, dict[str, Any]] = {}
    pool_names = [n for n in names if "-stream" not in n and not n.startswith("bare")]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for upstream in options.upstream:
            if upstream == "instant":
                with instant_upstream() as url:
                    results[upstream] = await measure(url, names, peer, options, workdir)
                if options.pool_calls:
                    with instant_upstream("--close-after", "100") as url:
                        pools["instant --close-after 100"] = await pool_check(
                            url, pool_names, peer, options.pool_calls, workdir
                        )
            else:
                model = write_tiny_model(workdir / "tiny.gguf")
                with running_llama_server(model, "", log_path=workdir / "llama.log") as llama:  # keyless
                    results[upstream] = await measure(llama.url, names, peer, options, workdir)
                    if options.pool_calls:
                        pools["llama"] = await pool_check(llama.url, pool_names, peer, options.pool_calls, workdir)
        if options.cold_starts:
            with instant_upstream() as url:
                starts = await cold_start(options.cold_starts, peer, options.refs, url)

    code = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((ROOT / "gguf_mcp").glob("*.py")))).hexdigest()
    out = [
        f"gguf-mcp performance, {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, mcp {version('mcp')}, aiohttp {version('aiohttp')}, "
        f"client mode {options.mode}; {options.rounds} rounds x {options.calls} calls, interleaved; "
        f"gguf_mcp/*.py sha256 {code[:12]}" + (f"; peer llama-mcp-server {peer.versions}" if peer else ""),
        "",
        *readme_table(results, starts, options.sessions, options.session_calls),
    ]
    for upstream, result in results.items():
        out += ["", *latency_table(upstream, result), "", *breakdown_lines(result)]
    out += ["", *throughput_lines(results, options.sessions, options.session_calls)]
    out += ["", *footprint_lines(results, starts)]
    if pools:
        out += ["", "Connection pool (a TCP relay counts connections; gguf-mcp streams every 5th call)", ""]
        out += pool_lines(pools)
        out += [f"- {u} {n}: {f}" for u, found in pools.items() for n, r in found.items() for f in r["failures"][:3]]
    print("\n".join(out), flush=True)
    if options.json:
        raw = {"results": results, "cold_start": starts, "pool": pools, "options": vars(options) | {"json": None}}
        options.json.write_text(json.dumps(raw, indent=1, default=str))


if __name__ == "__main__":
    anyio.run(main)
