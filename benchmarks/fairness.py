"""Fairness under a burst: how long one client's calls take while another client's burst waits.

The scale benchmark's emulated deployment (`benchmarks/emulator.py`, first token after `--ttft`,
then one every `--interval`) with `--slots` slots (4). Client A fires `--burst` calls at once (50);
client B, from just after, makes one call at a time for as long as A's burst lasts. Reported: B's
call time (p50, p95, max) under the burst against B alone, with the fair queue and without it (first
come first served: the emulator's own queue, as llama-server's), and how long A's burst took.

Modes:
- `direct` (default): gguf-mcp's fair share in this process, `FairShare.call` around the upstream
  client's streamed chat exactly as the tools wrap it, against the emulator over real HTTP; "fifo"
  is the same calls without `FairShare`.
- `mcp`: end to end. gguf-mcp as an HTTP server with two named clients (`[clients.a]`,
  `[clients.b]` in its TOML, each with its token's SHA-256), called by the official MCP client with
  each one's bearer token; "fifo" is the server as of `--fifo-ref` (a git ref without the fair
  queue; both clients then share one `GGUF_MCP_AUTH_TOKEN`).
- `overhead`: the CPU per call that `FairShare.call` adds (limits, queue, metrics, an audit line to
  a file, the span check), with no upstream, in this process.

    .venv/bin/python -m benchmarks.fairness                    # ~1.5 min: alone, fair (grace 0, 50 ms), fifo
    .venv/bin/python -m benchmarks.fairness --vary             # A's calls of 8..24 tokens (slots free staggered)
    .venv/bin/python -m benchmarks.fairness --mode mcp --fifo-ref <ref before the fair queue>
    .venv/bin/python -m benchmarks.fairness --mode overhead
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
from prometheus_client import CollectorRegistry

from benchmarks.common import listening, module_argv, pct, source_of
from gguf_mcp.clients import Caller, ClientPolicy
from gguf_mcp.config import Deployment, load_settings
from gguf_mcp.dialects import CHAT
from gguf_mcp.fairshare import AuditLog, FairShare, Metrics
from gguf_mcp.fairshare.share import GRACE_S
from gguf_mcp.upstream import UpstreamClient, upstream_client
from tests.support.bridge import connect_http, free_port, gguf_mcp_argv, serving

A = Caller("a", ClientPolicy())
B = Caller("b", ClientPolicy())
OneCall = Callable[[str, int], Coroutine[Any, Any, None]]
"""Make one call as client "a" or "b" asking for this many tokens; returns when it has ended."""


@dataclass(frozen=True)
class Result:
    system: str
    b_calls: list[float]
    burst_s: float | None

    def row(self, alone_p50: float) -> str:
        p50, p95 = pct(self.b_calls, 0.5), pct(self.b_calls, 0.95)
        burst = f"{self.burst_s:.1f}" if self.burst_s is not None else "-"
        return (
            f"| {self.system} | {len(self.b_calls)} | {p50:.2f} | {p95:.2f} | {max(self.b_calls):.2f} "
            f"| {p50 / alone_p50:.2f}x | {p95 / alone_p50:.2f}x | {burst} |"
        )


async def scenario(system: str, call: OneCall, args: argparse.Namespace, *, burst: bool) -> Result:
    """B's calls, alone (`--alone-calls` of them) or while A's burst lasts."""
    b_calls: list[float] = []
    burst_done = anyio.Event()
    burst_s: float | None = None

    async def a_burst() -> None:
        nonlocal burst_s
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(args.burst):
                tokens = (
                    random.randint(args.max_tokens // 2, args.max_tokens * 3 // 2) if args.vary else args.max_tokens
                )
                tg.start_soon(call, "a", tokens)
        burst_s = time.monotonic() - started
        burst_done.set()

    async with anyio.create_task_group() as tg:
        if burst:
            tg.start_soon(a_burst)
            await anyio.sleep(0.05)  # A's calls are all queued by then: B arrives behind the whole burst
        while not burst_done.is_set() if burst else len(b_calls) < args.alone_calls:
            started = time.monotonic()
            await call("b", args.max_tokens)
            b_calls.append(time.monotonic() - started)
    return Result(system, b_calls, burst_s)


# --- direct: the fair share in this process -----------------------------------------------------


def direct_caller(upstream: UpstreamClient, dep: Deployment, fair_share: FairShare | None) -> OneCall:
    async def call(client: str, max_tokens: int) -> None:
        body = {
            "model": "local",
            "messages": [{"role": "user", "content": secrets.token_hex(8)}],
            "max_tokens": max_tokens,
        }
        if fair_share is None:
            await _drain(upstream, dep, body)
            return
        async with fair_share.call(A if client == "a" else B, dep, "chat", max_tokens=max_tokens) as admitted:
            await _drain(upstream, dep, {**body, "max_tokens": admitted.max_tokens}, admitted.first_token)

    return call


async def _drain(
    upstream: UpstreamClient, dep: Deployment, body: dict[str, Any], first: Callable[[], None] = lambda: None
) -> None:
    async with aclosing(upstream.stream(dep, CHAT, body)) as events:
        async for _ in events:
            first()


async def run_direct(args: argparse.Namespace, url: str) -> list[Result]:
    settings = load_settings({}, {"GGUF_BASE_URL": url})
    dep = settings.deployments[settings.default_deployment]
    http, upstream = upstream_client(settings)
    systems: list[tuple[str, float | None, bool]] = [("B alone", GRACE_S, False)]
    systems += [(f"fair queue, grace {g * 1000:g} ms", g, True) for g in args.graces]
    systems += [("fifo (no queue)", None, True)]
    results = []
    async with http:
        for system, grace, burst in systems:
            fair_share = None if grace is None else FairShare(upstream, read_timeout=settings.timeout, grace=grace)
            results.append(await scenario(system, direct_caller(upstream, dep, fair_share), args, burst=burst))
    return results


# --- mcp: end to end, two named clients ---------------------------------------------------------


@asynccontextmanager
async def mcp_server(args: argparse.Namespace, url: str, tokens: dict[str, str], ref: str | None) -> AsyncIterator[str]:
    workdir = Path(tempfile.mkdtemp(prefix="gguf-fairness-"))
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(source_of(ref)), "PYTHONSAFEPATH": "1"}
    if ref is None:  # this checkout: the fair queue and named clients
        config = f'[deployments.emu]\nbase_url = "{url}"\n' + "".join(
            f'[clients.{name}]\ntoken_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
            for name, token in tokens.items()
        )
        (workdir / "gguf-mcp.toml").write_text(config)
        env["GGUF_MCP_CONFIG"] = str(workdir / "gguf-mcp.toml")
    else:  # an older server: one shared token, no queue of its own
        env |= {"GGUF_BASE_URL": url, "GGUF_MCP_AUTH_TOKEN": tokens["a"]}
        tokens["b"] = tokens["a"]
    port = free_port()
    with serving(gguf_mcp_argv(port), port, env, workdir / "server.log") as server:
        yield server.url


def mcp_caller(sessions: dict[str, Any]) -> OneCall:
    async def call(client: str, max_tokens: int) -> None:
        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            pass  # a progress token makes the bridge stream, as the emulator always does

        arguments = {"messages": [{"role": "user", "content": secrets.token_hex(8)}], "max_tokens": max_tokens}
        result = await sessions[client].call_tool("chat", arguments, progress_callback=on_progress)
        if result.is_error:
            raise RuntimeError(f"client {client}: {result.content}")

    return call


async def run_mcp(args: argparse.Namespace, url: str) -> list[Result]:
    results = []
    for system, ref, burst in (("B alone", None, False), ("fair queue", None, True), ("fifo", args.fifo_ref, True)):
        if ref is None and system == "fifo":
            raise SystemExit("--mode mcp needs --fifo-ref: a git ref of gguf-mcp without the fair queue")
        tokens = {"a": secrets.token_urlsafe(32), "b": secrets.token_urlsafe(32)}
        async with mcp_server(args, url, tokens, ref) as endpoint, AsyncExitStack() as stack:
            sessions = {
                name: await stack.enter_async_context(connect_http(endpoint, token)) for name, token in tokens.items()
            }
            results.append(await scenario(system, mcp_caller(sessions), args, burst=burst))
    return results


# --- overhead: FairShare's own CPU per call -----------------------------------------------------


async def run_overhead(args: argparse.Namespace) -> None:
    settings = load_settings({}, {"GGUF_BASE_URL": "http://127.0.0.1:9"})
    dep = settings.deployments["default"]
    upstream = UpstreamClient(httpx2.AsyncClient(), settings)  # never used: the slot count is fixed
    with tempfile.TemporaryDirectory() as tmp:
        audit = AuditLog.open(str(Path(tmp) / "audit.jsonl"))
        fixed = {"default": 4}
        bare = FairShare(upstream, read_timeout=60, max_concurrency=fixed)
        full = FairShare(
            upstream, read_timeout=60, max_concurrency=fixed, metrics=Metrics(CollectorRegistry()), audit=audit
        )
        for name, fair_share in (("limits + queue", bare), ("+ metrics + audit", full)):
            for _ in range(2):  # a warm-up round, then the measured one
                started = time.process_time()
                for n in range(args.calls):
                    async with fair_share.call(A, dep, "chat", request_id=n, max_tokens=16) as call:
                        call.first_token()
                        call.usage(16, 16, "emu")
                per_call_us = (time.process_time() - started) / args.calls * 1e6
            print(f"{name}: {per_call_us:.1f} us CPU per call ({args.calls} calls, no upstream)")
        audit.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--mode", choices=("direct", "mcp", "overhead"), default="direct")
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--burst", type=int, default=50, help="A's calls at once (default 50)")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per call (default 16)")
    parser.add_argument("--vary", action="store_true", help="A's calls ask for max-tokens/2 .. 3*max-tokens/2")
    parser.add_argument("--alone-calls", type=int, default=10)
    parser.add_argument("--ttft", default="0.3")
    parser.add_argument("--interval", default="0.05")
    parser.add_argument("--fifo-ref", help="mcp mode: the git ref of the server without the fair queue")
    parser.add_argument(
        "--graces", type=float, nargs="+", default=[0.0, GRACE_S],
        help=f"direct mode: the fair queue's grace (s) to compare (default 0 and {GRACE_S:g}: off and on)",
    )  # fmt: skip
    parser.add_argument("--calls", type=int, default=20_000, help="overhead mode: calls measured")
    parser.add_argument("--json", type=Path, help="write the raw call times here")
    args = parser.parse_args()
    if args.mode == "overhead":
        anyio.run(run_overhead, args)
        return
    emulator = module_argv("emulator", "--parallel", str(args.slots), "--ttft", args.ttft, "--interval", args.interval)
    with listening(emulator) as (_, port):
        url = f"http://127.0.0.1:{port}"
        results = anyio.run(run_direct if args.mode == "direct" else run_mcp, args, url)
        stats = httpx.get(f"{url}/_stats").json()
    alone = statistics.median(results[0].b_calls)
    varied = " (varied)" if args.vary else ""
    print(f"\n{args.mode}: {args.slots} slots, A bursts {args.burst} calls of {args.max_tokens} tokens{varied}, "
          f"B one at a time; emulator peak streams {stats['peak_streams']}\n")  # fmt: skip
    print("| system | B calls | B p50 s | B p95 s | B max s | p50 / alone | p95 / alone | A's burst s |")
    print("|---|---|---|---|---|---|---|---|")
    for result in results:
        print(result.row(alone))
    if args.json:
        args.json.write_text(json.dumps([vars(r) for r in results], indent=1))


if __name__ == "__main__":
    main()
