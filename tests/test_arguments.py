"""Tool arguments are bounded before anything is sent: integers the upstream can represent, list
lengths and nesting that one call cannot turn into a memory bomb. Each refusal is one clear
error naming the argument, and the deployment receives nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gguf_mcp.tools import INT32, MAX_DEPTH, MAX_MESSAGES, MAX_STOP, MAX_TOOLS, UINT32
from tests.support.bridge import Bridge
from tests.support.calls import env_for, text_of
from tests.support.gateway import Gateway

USER = [{"role": "user", "content": "Hi"}]


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": True}
    for _ in range(depth - 1):
        node = {"child": node}
    return node


REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("chat", {"messages": USER, "max_tokens": 2**63}, "max_tokens"),
    ("chat", {"messages": USER, "max_tokens": INT32 + 1}, "max_tokens"),
    ("chat", {"messages": USER, "seed": UINT32 + 1}, "seed"),
    ("chat", {"messages": USER, "seed": -2}, "seed"),
    ("messages", {"messages": USER, "max_tokens": 2**40}, "max_tokens"),
    ("messages", {"messages": USER, "max_tokens": 2, "top_k": 2**31}, "top_k"),
    ("complete", {"prompt": "x", "max_tokens": 2**63}, "max_tokens"),
    ("chat", {"messages": USER * (MAX_MESSAGES + 1)}, "messages"),
    ("messages", {"messages": USER * (MAX_MESSAGES + 1), "max_tokens": 2}, "messages"),
    ("chat", {"messages": USER, "stop": ["x"] * (MAX_STOP + 1)}, "stop"),
    ("chat", {"messages": USER, "tools": [{"type": "function"}] * (MAX_TOOLS + 1)}, "tools"),
    ("chat", {"messages": USER, "response_format": nested(MAX_DEPTH + 1)}, "response_format"),
    ("chat", {"messages": [{"role": "user", "content": [nested(MAX_DEPTH + 1)]}]}, "messages"),
    ("embed", {"input": ["x"] * 2049}, "input"),
]


async def test_arguments_beyond_what_the_upstream_can_take_are_refused_before_sending(
    gateway: Gateway, tmp_path: Path
) -> None:
    gateway.add_canned_deployment("dep-main")
    async with Bridge("stdio", tmp_path).connect(env_for(gateway)) as client:
        for tool, arguments, named in REFUSED:
            result = await client.call_tool(tool, arguments)
            assert result.is_error, (tool, named)
            assert named in text_of(result), (tool, named, text_of(result)[:300])
        at_the_limit = await client.call_tool(
            "chat", {"messages": USER * MAX_MESSAGES, "max_tokens": 1, "seed": UINT32, "stop": ["x"] * MAX_STOP}
        )
    assert not at_the_limit.is_error, text_of(at_the_limit)
    assert len(gateway.requests_for("dep-main")) == 1, "only the call within the limits reached the deployment"


async def test_invalid_arguments_read_one_line_per_argument_with_what_is_accepted(
    gateway: Gateway, tmp_path: Path
) -> None:
    gateway.add_canned_deployment("dep-main")
    async with Bridge("stdio", tmp_path).connect(env_for(gateway)) as client:
        result = await client.call_tool(
            "chat", {"messages": [{"role": "robot", "content": "x"}], "max_tokens": 0, "temperature": "hot"}
        )
    text = text_of(result)
    head, *lines = text.split("\n")
    assert result.is_error and head.endswith("Invalid arguments for chat (nothing was sent):")
    assert [line.split(":")[0] for line in lines] == ["- messages.0.role", "- max_tokens", "- temperature"]
    # The bound is pydantic's words; the advertised schema (the "accepted" part) leaves server guards out.
    assert lines[1].endswith("greater than or equal to 1 (got 0); accepted: integer or null")
    assert "pydantic.dev" not in text and "validation error" not in text
    assert gateway.requests == []
