"""What an agent reads when a deployment or a caller goes wrong: bounded, and plain where the words
are an upstream's.

gguf-mcp runs as users run it (stdio, the official client) against the gateway emulator, whose
faults play the hostile or broken deployment: an answer that never ends, model ids carrying
terminal escapes. The caller's side: a deployment name the size of a file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gguf_mcp.upstream import MAX_BODY
from tests.support.bridge import Bridge
from tests.support.calls import env_for, text_of
from tests.support.gateway import Exchange, Fault, Gateway

USER = [{"role": "user", "content": "Write forever"}]
TOKEN = "x" * 1000


class EndlessAnswer(Fault):
    """A stream of well-formed token events that never ends (until gguf-mcp's cap on an answer)."""

    async def answer(self, exchange: Exchange) -> None:
        await exchange.start(200, [(b"content-type", b"text/event-stream")])
        event = b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": TOKEN}}]}).encode() + b"\n\n"
        batch = event * 64
        for _ in range(MAX_BODY // len(batch) + 8):
            await exchange.write(batch)
        await exchange.finish()


@pytest.fixture
def canned(gateway: Gateway) -> Gateway:
    gateway.add_canned_deployment("dep-main")
    return gateway


async def test_a_stream_cut_at_the_size_cap_carries_a_bounded_part_and_says_how_to_get_less(
    canned: Gateway, tmp_path: Path
) -> None:
    canned.inject("dep-main", EndlessAnswer())
    bridge = Bridge("stdio", tmp_path)
    async with bridge.connect(env_for(canned)) as client:
        # A deadline makes gguf-mcp stream (and keep the partial text), without progress messages.
        result = await client.call_tool("chat", {"messages": USER, "deadline": 600})
    text = text_of(result)
    assert result.is_error
    assert "larger than 32 MiB" in text
    assert len(text) < 20_000, f"the error carries {len(text)} characters"
    assert "max_tokens" in text and "characters" in text
    assert TOKEN * 10 in text, "the beginning of what arrived is kept"


async def test_an_unknown_deployment_name_is_echoed_cut(canned: Gateway, tmp_path: Path) -> None:
    name = "n" * 100_000
    bridge = Bridge("stdio", tmp_path)
    async with bridge.connect(env_for(canned)) as client:
        result = await client.call_tool("chat", {"messages": USER, "deployment": name})
    text = text_of(result)
    assert result.is_error and "Unknown deployment 'nnnn" in text
    assert len(text) < 500, f"the error carries {len(text)} characters"
    assert canned.requests == []


HOSTILE_ID = "\x1b[2J\x1b]0;owned\x07tiny\nmodel\r\x9b31m.gguf"


async def test_model_ids_reach_the_agent_without_terminal_escapes_or_line_breaks(
    canned: Gateway, tmp_path: Path
) -> None:
    models = {"object": "list", "data": [{"id": HOSTILE_ID, "meta": {"general.name": HOSTILE_ID, "n_ctx": 512}}]}
    canned.inject("dep-main", Fault.error(200, body=json.dumps(models).encode()), 2)
    bridge = Bridge("stdio", tmp_path)
    async with bridge.connect(env_for(canned)) as client:
        result = await client.call_tool("list_models", {})
        resource = await client.read_resource("gguf://deployments")
    text = text_of(result)
    assert not result.is_error, text
    assert text.splitlines() == ["default (default): tiny model .gguf, context 512 tokens"]
    for shown in (text, json.dumps(result.structured_content), resource.contents[0].text):  # type: ignore[union-attr]
        decoded = json.dumps(json.loads(shown) if shown.startswith("{") else shown, ensure_ascii=False)
        for control in ("\x1b", "\\u001b", "\x07", "\\u0007", "\x9b", "\r", "\\r", "\\n"):
            assert control not in decoded, (control, shown)
