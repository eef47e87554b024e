"""More generations in flight than upstream connections: a call that waits for a free connection
and never gets one is reported as saturation (and the setting to raise), not as an unreachable
deployment, and it is not retried; calls after the rush are served.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import anyio

from tests.support.bridge import Bridge
from tests.support.calls import Progress, env_for, text_of
from tests.support.gateway import Exchange, Fault, Gateway

USER = [{"role": "user", "content": "Hi"}]


@dataclass(frozen=True)
class SlowStream(Fault):
    """A live stream: one token every `every` seconds for `tokens` tokens, then the end."""

    tokens: int
    every: float

    async def answer(self, exchange: Exchange) -> None:
        await exchange.start(200, [(b"content-type", b"text/event-stream")])
        for _ in range(self.tokens):
            chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "x"}}]}
            await exchange.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await anyio.sleep(self.every)  # the pace of a slow model: what the test is about
        await exchange.write(b"data: [DONE]\n\n")
        await exchange.finish()


async def test_waiting_for_a_free_upstream_connection_is_reported_as_saturation(
    gateway: Gateway, tmp_path: Path
) -> None:
    gateway.add_canned_deployment("dep-main")
    env = env_for(gateway, GGUF_MCP_UPSTREAM_CONNECTIONS="1", GGUF_MCP_TIMEOUT="1")
    gateway.inject("dep-main", SlowStream(tokens=12, every=0.25))  # holds the one connection ~3 s, never idle 1 s
    async with Bridge("stdio", tmp_path).connect(env) as client:
        progress = Progress()
        async with anyio.create_task_group() as tg:
            holder: list[object] = []

            async def hold() -> None:
                holder.append(await client.call_tool("chat", {"messages": USER}, progress_callback=progress))

            tg.start_soon(hold)
            await progress.first.wait()
            waiting = await client.call_tool("chat", {"messages": USER, "max_tokens": 1})
        after = await client.call_tool("chat", {"messages": USER, "max_tokens": 1})
    text = text_of(waiting)
    assert waiting.is_error
    assert "every upstream connection stayed busy" in text and "GGUF_MCP_UPSTREAM_CONNECTIONS" in text
    assert "could not be reached" not in text and "gave up after" not in text
    assert not holder[0].is_error  # type: ignore[attr-defined]
    assert not after.is_error, text_of(after)
    assert len(gateway.requests_for("dep-main")) == 2  # the one that waited never reached the deployment
