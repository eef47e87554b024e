"""Long generations end to end: tokens streamed as progress, cancellation that reaches llama.cpp,
deadlines that return partial output, and streams that stall or break reported, never truncated
silently. Over stdio and Streamable HTTP, against llama.cpp's server and the gateway emulator.
"""

from __future__ import annotations

import re
import time
from typing import Any

import anyio
import pytest

from tests.support.bridge import Bridge
from tests.support.calls import Progress, env_for
from tests.support.gateway import Fault, Gateway
from tests.support.llama import LlamaServer

USER = [{"role": "user", "content": "Hello there"}]


def decoded(llama: LlamaServer) -> int:
    """llama.cpp's count of decode steps: one per generated token (plus one per prompt batch)."""
    match = re.search(r"^llamacpp:n_decode_total (\d+)", llama.metrics_text(), re.MULTILINE)
    assert match, "llama-server reports no n_decode_total metric"
    return int(match.group(1))


@pytest.mark.parametrize(("tool", "reason_key"), [("chat", "finish_reason"), ("messages", "stop_reason")])
async def test_progress_streams_tokens_and_the_result_matches_the_plain_call(
    bridge: Bridge, gw: Gateway, tool: str, reason_key: str
) -> None:
    args: dict[str, Any] = {"messages": USER, "max_tokens": 40, "temperature": 0}
    progress = Progress()
    async with bridge.connect(env_for(gw, "dep")) as client:
        plain = await client.call_tool(tool, args)
        streamed = await client.call_tool(tool, args, progress_callback=progress)
    assert not plain.is_error and not streamed.is_error
    assert plain.structured_content == streamed.structured_content
    assert plain.content == streamed.content
    plain_body, streamed_body = (r.json for r in gw.requests_for("dep"))
    assert isinstance(plain_body, dict) and isinstance(streamed_body, dict)
    assert "stream" not in plain_body
    assert streamed_body["stream"] is True
    counts = [p for p, _, _ in progress.events]
    assert counts[0] == 1, "the first notification goes out with the first token"
    assert counts == sorted(set(counts)), "progress only grows"
    assert counts[-1] == 40
    assert {t for _, t, _ in progress.events} == {40}
    assert streamed.structured_content is not None
    assert progress.text == streamed.structured_content["text"]
    assert streamed.structured_content[reason_key] in ("length", "max_tokens")


async def test_progress_is_throttled(bridge: Bridge, gw: Gateway) -> None:
    progress = Progress()
    async with bridge.connect(env_for(gw, "dep")) as client:
        started = time.monotonic()
        result = await client.call_tool("chat", {"messages": USER, "max_tokens": 1500}, progress_callback=progress)
        elapsed = time.monotonic() - started
    assert not result.is_error
    # One at the first token, then at most one per 0.1 s, plus the final flush.
    assert 2 <= len(progress.events) <= elapsed / 0.1 + 2
    assert result.structured_content is not None
    assert progress.text == result.structured_content["text"]


@pytest.mark.parametrize("tool", ["chat", "messages"])
async def test_cancel_closes_the_upstream_request_and_llama_stops(
    bridge: Bridge, gw: Gateway, llama_server: LlamaServer, tool: str
) -> None:
    max_tokens = 8000  # about a second of the tiny model: the cancel has half of that to reach it, even under load
    progress = Progress()
    async with bridge.connect(env_for(gw, "dep")) as client:
        await client.call_tool(tool, {"messages": USER, "max_tokens": 1})  # warm: the server is up
        before = decoded(llama_server)
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                await client.call_tool(tool, {"messages": USER, "max_tokens": max_tokens}, progress_callback=progress)

            scope = anyio.CancelScope()

            async def run() -> None:
                with scope:
                    await call()

            tg.start_soon(run)
            await progress.first.wait()
            scope.cancel()
        (disconnect,) = await anyio.to_thread.run_sync(lambda: gw.wait_for_disconnects(1, timeout=10))
        assert await anyio.to_thread.run_sync(llama_server.wait_until_idle, 10.0)
        generated = decoded(llama_server) - before
        after = await client.call_tool(tool, {"messages": USER, "max_tokens": 1})
    assert disconnect.path in ("/v1/chat/completions", "/v1/messages")
    assert generated < max_tokens / 2, f"llama.cpp kept generating after the cancel ({generated} tokens)"
    assert not after.is_error, "the session survives a cancelled call"


class PauseStream(Fault):
    """Relay `after_events` SSE events, then hold the stream open and silent for `seconds`."""

    def __init__(self, after_events: int, seconds: float) -> None:
        self.after_events, self.seconds = after_events, seconds

    async def answer(self, exchange: Any) -> None:
        async with exchange.open_upstream() as reply:
            await exchange.start(reply.status, reply.headers)
            sent = 0
            async for event in exchange.sse_events(reply):
                await exchange.write(event)
                sent += 1
                if sent == self.after_events:
                    await anyio.sleep(self.seconds)
            await exchange.finish()


class SlowStream(Fault):
    """Relay every SSE event `interval` seconds apart: slow, but alive."""

    def __init__(self, interval: float) -> None:
        self.interval = interval

    async def answer(self, exchange: Any) -> None:
        async with exchange.open_upstream() as reply:
            await exchange.start(reply.status, reply.headers)
            async for event in exchange.sse_events(reply):
                await anyio.sleep(self.interval)
                await exchange.write(event)
            await exchange.finish()


@pytest.mark.parametrize(("tool", "reason_key"), [("chat", "finish_reason"), ("messages", "stop_reason")])
async def test_deadline_returns_partial_output_marked_incomplete(
    bridge: Bridge, gw: Gateway, tool: str, reason_key: str
) -> None:
    gw.inject("dep", PauseStream(after_events=6, seconds=60))
    async with bridge.connect(env_for(gw, "dep")) as client:
        started = time.monotonic()
        result = await client.call_tool(tool, {"messages": USER, "max_tokens": 100, "deadline": 1.5})
        elapsed = time.monotonic() - started
    assert not result.is_error
    reply = result.structured_content
    assert reply is not None
    assert reply[reason_key] == "deadline"
    assert 1 <= len(reply["text"]) <= 6
    assert "Incomplete: stopped at the 1.5 s deadline" in result.content[0].text  # type: ignore[union-attr]
    assert elapsed < 30
    assert await anyio.to_thread.run_sync(lambda: gw.wait_for_disconnects(1, timeout=10))


async def test_deadline_setting_applies_to_every_call(bridge: Bridge, gw: Gateway) -> None:
    gw.inject("dep", PauseStream(after_events=4, seconds=60))
    async with bridge.connect(env_for(gw, "dep", GGUF_MCP_DEADLINE="1")) as client:
        cut = await client.call_tool("chat", {"messages": USER, "max_tokens": 100})
        whole = await client.call_tool("chat", {"messages": USER, "max_tokens": 5})
    assert cut.structured_content is not None and cut.structured_content["finish_reason"] == "deadline"
    assert whole.structured_content is not None and whole.structured_content["finish_reason"] == "length"


async def test_deadline_before_any_output_is_an_error(bridge: Bridge, gw: Gateway) -> None:
    gw.inject("dep", Fault.delay_first_byte(60))
    async with bridge.connect(env_for(gw, "dep")) as client:
        result = await client.call_tool("messages", {"messages": USER, "max_tokens": 5, "deadline": 1})
    assert result.is_error
    assert "produced no output within the 1 s deadline" in result.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize("tool", ["chat", "messages"])
async def test_a_stalled_stream_fails_after_the_read_timeout_with_the_partial_text(
    bridge: Bridge, gw: Gateway, tool: str
) -> None:
    gw.inject("dep", PauseStream(after_events=5, seconds=60))
    async with bridge.connect(env_for(gw, "dep", GGUF_MCP_TIMEOUT="1")) as client:
        started = time.monotonic()
        result = await client.call_tool(tool, {"messages": USER, "max_tokens": 50}, progress_callback=Progress())
        elapsed = time.monotonic() - started
        after = await client.call_tool(tool, {"messages": USER, "max_tokens": 2}, progress_callback=Progress())
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "stalled: nothing arrived for 1 s" in text
    assert "Partial output (" in text
    assert elapsed < 30
    assert not after.is_error


async def test_a_slow_but_live_stream_is_not_cut(bridge: Bridge, gw: Gateway) -> None:
    gw.inject("dep", SlowStream(interval=0.4))
    async with bridge.connect(env_for(gw, "dep", GGUF_MCP_TIMEOUT="1")) as client:
        result = await client.call_tool("chat", {"messages": USER, "max_tokens": 4}, progress_callback=Progress())
    assert not result.is_error, result.content
    assert result.structured_content is not None and result.structured_content["finish_reason"] == "length"


@pytest.mark.parametrize("tool", ["chat", "messages"])
async def test_a_stream_cut_before_its_final_event_is_an_error_not_an_answer(
    bridge: Bridge, gw: Gateway, tool: str
) -> None:
    gw.inject("dep", Fault.cut_stream(after_events=5))
    async with bridge.connect(env_for(gw, "dep")) as client:
        result = await client.call_tool(tool, {"messages": USER, "max_tokens": 50}, progress_callback=Progress())
        after = await client.call_tool(tool, {"messages": USER, "max_tokens": 2}, progress_callback=Progress())
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "broke off mid-stream" in text or "ended before its final event" in text
    assert "Partial output (" in text
    assert not after.is_error
