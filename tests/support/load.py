"""Many official-client sessions calling `chat` at once, each call distinguishable from every other.

Used by the load test (correctness: every answer belongs to its request) and by
`benchmarks/http_load.py` (calls/s and latency). Call `c` of session `s` sends the message
`content_for(s, c)` to deployment `deployments[(s + c) % len(deployments)]`; even sessions use
the handshake era (`initialize`, sessions), odd ones the 2026-07-28 era, so both are exercised.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.types import CallToolResult

from tests.support.bridge import connect_http


@dataclass(frozen=True)
class CallRecord:
    session: int
    call: int
    deployment: str | None
    content: str
    seconds: float
    result: CallToolResult


def content_for(session: int, call: int) -> str:
    return f"load session {session} call {call}"


async def run_sessions(
    urls: str | Sequence[str],
    sessions: int,
    calls: int,
    deployments: Sequence[str] | None = None,
    token: str | None = None,
    warmup: int = 0,
    on_start: Callable[[], None] | None = None,
) -> tuple[list[CallRecord], float]:
    """Run every session concurrently; returns the measured calls and the wall time they took.

    Session `s` talks to `urls[s % len(urls)]` (several URLs: sessions pinned to servers, as a
    load balancer with sticky sessions would). Each session connects, lists tools and makes
    `warmup` unmeasured calls before all sessions start their measured calls together (after
    calling `on_start`, if given).
    """
    targets = [urls] if isinstance(urls, str) else list(urls)
    records: list[CallRecord] = []
    ready = anyio.Event()
    connected = 0
    started_at: list[float] = []

    async def session(s: int) -> None:
        nonlocal connected
        mode = "legacy" if s % 2 == 0 else "auto"
        async with connect_http(targets[s % len(targets)], token, mode=mode) as client:
            await client.list_tools()
            for w in range(warmup):
                await client.call_tool("chat", arguments(s, -1 - w))
            connected += 1
            if connected == sessions:
                if on_start is not None:
                    on_start()
                started_at.append(time.perf_counter())
                ready.set()
            await ready.wait()
            for c in range(calls):
                args = arguments(s, c)
                began = time.perf_counter()
                result = await client.call_tool("chat", args)
                took = time.perf_counter() - began
                records.append(CallRecord(s, c, args.get("deployment"), content_for(s, c), took, result))

    def arguments(s: int, c: int) -> dict[str, Any]:
        args: dict[str, Any] = {"messages": [{"role": "user", "content": content_for(s, c)}], "max_tokens": 8}
        if deployments:
            args["deployment"] = deployments[(s + c) % len(deployments)]
        return args

    async with anyio.create_task_group() as tg:
        for s in range(sessions):
            tg.start_soon(session, s)
    return records, time.perf_counter() - started_at[0]
