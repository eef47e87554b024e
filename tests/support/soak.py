"""Load for leak checks: many ordinary calls, and many calls cancelled mid-flight.

Shared by tests/test_hygiene.py (a bounded run) and benchmarks/soak.py (the long one). Both drive
one gguf-mcp process through the official MCP client against the gateway's canned deployment
named "dep", so the numbers are the bridge's own.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.to_thread

from tests.support.gateway import Fault, Gateway

USER = [{"role": "user", "content": "Hello there"}]
# Every tool and both upstream paths (plain JSON, and SSE when a progress token asks for it).
CALL_MIX: tuple[tuple[str, dict[str, Any], bool], ...] = (
    ("chat", {"messages": USER, "max_tokens": 8}, False),
    ("messages", {"messages": USER, "max_tokens": 8}, False),
    ("chat", {"messages": USER, "max_tokens": 8}, True),
    ("complete", {"prompt": "Once upon a time", "max_tokens": 8}, False),
    ("embed", {"input": ["a", "b"]}, False),
    ("messages", {"messages": USER, "max_tokens": 8}, True),
    ("list_models", {}, False),
)
CANCELLED_CALL = {"messages": USER, "max_tokens": 8}
ARRIVAL_TIMEOUT_S = 10.0


async def _ignore_progress(progress: float, total: float | None, message: str | None) -> None:
    pass


async def sequential_calls(client: Any, count: int) -> int:
    """`count` calls one after the other, cycling through `CALL_MIX`; returns how many failed."""
    failed = 0
    for i in range(count):
        tool, args, streamed = CALL_MIX[i % len(CALL_MIX)]
        result = await client.call_tool(tool, args, progress_callback=_ignore_progress if streamed else None)
        failed += bool(result.is_error)
    return failed


async def cancellation_churn(client: Any, gateway: Gateway, count: int) -> None:
    """`count` calls, each held by the gateway before its first byte and cancelled once it arrived.

    Alternates plain and streamed calls. Returns when the gateway has seen every cancelled request's
    connection close (so gguf-mcp really let go of it).
    """
    disconnects = len(gateway.disconnects)

    async def call(streamed: bool) -> None:
        progress = _ignore_progress if streamed else None
        await client.call_tool("chat", CANCELLED_CALL, progress_callback=progress)

    for i in range(count):
        gateway.inject("dep", Fault.delay_first_byte(60))
        arrived = len(gateway.requests) + 1
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, bool(i % 2))
                deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
                while len(gateway.requests) < arrived:  # polling the gateway's record, with a deadline
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"call {i} never reached the gateway")
                    await anyio.sleep(0.001)
                scope.cancel()
    await anyio.to_thread.run_sync(lambda: gateway.wait_for_disconnects(disconnects + count, timeout=30))
