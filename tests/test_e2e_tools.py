"""End to end: the official MCP client drives gguf-mcp (stdio and HTTP) against llama.cpp's server,
behind the GGUF Cloud gateway emulator and directly. The tiny model writes gibberish, so these
tests assert on what llama.cpp reports: shapes, finish reasons, usage counts, model metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from mcp.types import CallToolResult

from tests.support.bridge import Bridge
from tests.support.gateway import ACCOUNT_KEY, Gateway
from tests.support.llama import LLAMA_KEY, LlamaServer, running_llama_server

USER = [{"role": "user", "content": "Hello there"}]


@dataclass
class Target:
    """A two-deployment configuration (`main`, and `tools` with a tool-aware chat template)."""

    kind: Literal["gateway", "direct"]
    env: dict[str, str]
    model_id: str
    n_ctx: int


@pytest.fixture(params=["gateway", "direct"])
def target(
    request: pytest.FixtureRequest,
    gateway: Gateway,
    llama_server: LlamaServer,
    llama_tool_server: LlamaServer,
    tmp_path: Path,
) -> Target:
    if request.param == "gateway":
        gateway.add_deployment("dep-main", llama_server.url, llama_server.api_key)
        gateway.add_deployment("dep-tools", llama_tool_server.url, llama_tool_server.api_key)
        toml = f"""
            [deployments.main]
            base_url = "{gateway.base_url_for("dep-main")}"
            [deployments.tools]
            base_url = "{gateway.base_url_for("dep-tools")}/v1"
        """
        env = {"MODELSLAB_API_KEY": ACCOUNT_KEY}
    else:
        toml = f"""
            [deployments.main]
            base_url = "{llama_server.url}/v1/"
            [deployments.tools]
            base_url = "{llama_tool_server.url}"
            api_key_env = "TOOLS_KEY"
        """
        env = {"MODELSLAB_API_KEY": llama_server.api_key, "TOOLS_KEY": llama_tool_server.api_key}
    config = tmp_path / "gguf-mcp.toml"
    config.write_text("\n".join(line.strip() for line in toml.splitlines()))
    return Target(request.param, env | {"GGUF_MCP_CONFIG": str(config)}, llama_server.model_id, llama_server.n_ctx)


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


async def test_list_models_reports_what_llama_server_reports(bridge: Bridge, target: Target) -> None:
    async with bridge.connect(target.env) as client:
        listed = ok(await client.call_tool("list_models", {}))
    by_name = {d["deployment"]: d for d in listed["deployments"]}
    assert set(by_name) == {"main", "tools"}
    assert by_name["main"]["default"] is True
    for entry in by_name.values():
        (model,) = entry["models"]
        assert model["id"] == target.model_id
        assert model["context_size"] == target.n_ctx
        assert model["meta"]["n_vocab"] == 261
        assert model["parameters"] == model["meta"]["n_params"]


async def test_chat_returns_text_finish_reason_and_usage(bridge: Bridge, target: Target) -> None:
    async with bridge.connect(target.env) as client:
        result = await client.call_tool("chat", {"messages": USER, "max_tokens": 6})
    chat = ok(result)
    assert chat["finish_reason"] == "length"
    assert chat["usage"]["completion_tokens"] == 6
    assert chat["usage"]["total_tokens"] == chat["usage"]["prompt_tokens"] + 6
    assert chat["model"] == target.model_id
    assert chat["deployment"] == "main"
    assert 0 < len(chat["text"]) <= 6 * 4
    text = result.content[0].text  # type: ignore[union-attr]
    assert text.startswith(chat["text"])
    assert "cut off" in text and "max_tokens=6" in text


async def test_chat_sends_the_system_message(bridge: Bridge, target: Target) -> None:
    system = [{"role": "system", "content": "You answer in exactly one word, always."}]
    async with bridge.connect(target.env) as client:
        plain = ok(await client.call_tool("chat", {"messages": USER, "max_tokens": 2}))
        with_system = ok(await client.call_tool("chat", {"messages": system + USER, "max_tokens": 2}))
    # llama.cpp tokenises byte by byte: the system turn adds its length plus its template tokens.
    added = with_system["usage"]["prompt_tokens"] - plain["usage"]["prompt_tokens"]
    assert added >= len(system[0]["content"])


async def test_chat_accepts_content_parts(bridge: Bridge, target: Target) -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}]
    async with bridge.connect(target.env) as client:
        as_parts = ok(await client.call_tool("chat", {"messages": parts, "max_tokens": 2}))
        as_text = ok(await client.call_tool("chat", {"messages": USER, "max_tokens": 2}))
    assert as_parts["usage"]["prompt_tokens"] == as_text["usage"]["prompt_tokens"]


async def test_chat_forwards_tools_to_a_tool_aware_template(bridge: Bridge, target: Target) -> None:
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    async with bridge.connect(target.env) as client:
        without = ok(await client.call_tool("chat", {"messages": USER, "max_tokens": 2, "deployment": "tools"}))
        result = await client.call_tool(
            "chat",
            {"messages": USER, "max_tokens": 2, "deployment": "tools", "tools": [weather], "tool_choice": "auto"},
        )
    with_tools = ok(result)
    assert with_tools["deployment"] == "tools"
    # The template renders the tool definitions into the prompt only if they arrived intact.
    assert with_tools["usage"]["prompt_tokens"] > without["usage"]["prompt_tokens"] + len("get_weather")
    assert with_tools["finish_reason"] in ("length", "tool_calls", "stop")


async def test_chat_response_format_yields_json_matching_the_schema(bridge: Bridge, target: Target) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 5}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}
    async with bridge.connect(target.env) as client:
        chat = ok(await client.call_tool("chat", {"messages": USER, "max_tokens": 64, "response_format": fmt}))
    parsed = json.loads(chat["text"])
    assert set(parsed) == {"answer"}
    assert isinstance(parsed["answer"], str) and len(parsed["answer"]) <= 5
    assert chat["finish_reason"] == "stop"


async def test_messages_returns_text_blocks_stop_reason_and_usage(bridge: Bridge, target: Target) -> None:
    async with bridge.connect(target.env) as client:
        result = await client.call_tool("messages", {"messages": USER, "max_tokens": 5})
    reply = ok(result)
    assert reply["stop_reason"] == "max_tokens"
    assert reply["usage"]["output_tokens"] == 5
    assert [b["type"] for b in reply["content"]] == ["text"]
    assert reply["text"] == reply["content"][0]["text"]
    assert reply["model"] == target.model_id
    assert "cut off" in result.content[0].text  # type: ignore[union-attr]


async def test_messages_sends_the_system_prompt(bridge: Bridge, target: Target) -> None:
    system = "You answer in exactly one word, always."
    async with bridge.connect(target.env) as client:
        plain = ok(await client.call_tool("messages", {"messages": USER, "max_tokens": 2}))
        with_system = ok(await client.call_tool("messages", {"messages": USER, "max_tokens": 2, "system": system}))
    assert with_system["usage"]["input_tokens"] - plain["usage"]["input_tokens"] >= len(system)


async def test_messages_stops_at_a_stop_sequence(bridge: Bridge, target: Target) -> None:
    args: dict[str, Any] = {"messages": USER, "max_tokens": 12, "temperature": 0}
    async with bridge.connect(target.env) as client:
        free = ok(await client.call_tool("messages", args))
        stop = free["text"][4]
        cut = ok(await client.call_tool("messages", {**args, "stop_sequences": [stop]}))
    assert cut["text"] == free["text"][: free["text"].index(stop)]
    assert cut["stop_sequence"] == stop
    # llama.cpp says end_turn where Anthropic says stop_sequence; either is a normal stop.
    assert cut["stop_reason"] in ("end_turn", "stop_sequence")


async def test_bad_arguments_are_tool_errors_and_the_server_stays_up(bridge: Bridge, target: Target) -> None:
    async with bridge.connect(target.env) as client:
        empty = await client.call_tool("chat", {"messages": []})
        no_cap = await client.call_tool("messages", {"messages": USER})
        bad_role = await client.call_tool(
            "messages", {"messages": [{"role": "system", "content": "x"}], "max_tokens": 1}
        )
        unknown = await client.call_tool("chat", {"messages": USER, "deployment": "nope"})
        fine = await client.call_tool("chat", {"messages": USER, "max_tokens": 1})
    for result in (empty, no_cap, bad_role, unknown):
        assert result.is_error
    assert "Configured deployments: main, tools" in unknown.content[0].text  # type: ignore[union-attr]
    assert not fine.is_error


async def test_no_secret_reaches_the_agent_or_the_logs(bridge: Bridge, target: Target) -> None:
    async with bridge.connect(target.env | {"GGUF_MCP_LOG_LEVEL": "debug"}) as client:
        await client.call_tool("list_models", {})
        await client.call_tool("chat", {"messages": USER, "max_tokens": 2})
        await client.call_tool("messages", {"messages": USER, "max_tokens": 2})
        await client.call_tool("chat", {"messages": USER, "deployment": "nope"})
    seen = bridge.seen_text()
    assert "DEBUG" in seen  # debug logging did produce output to check
    for secret in {v for k, v in target.env.items() if k.endswith("KEY")}:
        assert secret not in seen


async def test_complete_continues_a_raw_prompt(bridge: Bridge, target: Target) -> None:
    async with bridge.connect(target.env) as client:
        result = await client.call_tool("complete", {"prompt": "Once upon a time", "max_tokens": 7})
        counts: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            counts.append(progress)

        streamed = await client.call_tool(
            "complete", {"prompt": "Once upon a time", "max_tokens": 7}, progress_callback=on_progress
        )
    reply = ok(result)
    assert reply["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 7
    assert 0 < reply["usage"]["prompt_tokens"] <= len("Once upon a time") * 2  # no chat template around it
    assert reply["model"] == target.model_id
    assert "cut off" in result.content[0].text  # type: ignore[union-attr]
    assert ok(streamed)["usage"] == reply["usage"]
    assert counts and counts[-1] == 7


async def test_embed_returns_one_vector_per_input(bridge: Bridge, target: Target) -> None:
    async with bridge.connect(target.env) as client:
        one = ok(await client.call_tool("embed", {"input": "hello"}))
        many = ok(await client.call_tool("embed", {"input": ["hello", "a longer text to embed"]}))
    assert one["dimensions"] == 64  # the tiny model's n_embd
    assert [e["index"] for e in many["embeddings"]] == [0, 1]
    assert all(len(e["embedding"]) == 64 for e in many["embeddings"])
    assert many["embeddings"][0]["embedding"] == pytest.approx(one["embeddings"][0]["embedding"], abs=1e-5)
    assert one["model"] == many["model"] == target.model_id  # not the "local" it was sent
    assert many["usage"]["prompt_tokens"] > one["usage"]["prompt_tokens"]


@pytest.fixture(scope="module")
def llama_without_embeddings(tiny_model_path: Path) -> Iterator[LlamaServer]:
    with running_llama_server(tiny_model_path, LLAMA_KEY, embeddings=False) as server:
        yield server


async def test_embed_on_a_deployment_without_embeddings_says_so(
    bridge: Bridge, llama_without_embeddings: LlamaServer
) -> None:
    env = {"GGUF_BASE_URL": llama_without_embeddings.url, "MODELSLAB_API_KEY": LLAMA_KEY}
    async with bridge.connect(env) as client:
        result = await client.call_tool("embed", {"input": "hello"})
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "does not serve embeddings" in text
    assert "HTTP 501" in text


async def test_tool_selection_exposes_only_the_chosen_tools(bridge: Bridge, target: Target) -> None:
    async with bridge.connect(target.env | {"GGUF_MCP_TOOLS": "chat,messages"}) as client:
        tools = (await client.list_tools()).tools
        hidden = await client.call_tool("embed", {"input": "x"})
    assert sorted(t.name for t in tools) == ["chat", "messages"]
    assert hidden.is_error


async def test_deployments_are_browsable_resources(bridge: Bridge, target: Target) -> None:
    async with bridge.connect(target.env) as client:
        listed = (await client.list_resources()).resources
        index = await client.read_resource("gguf://deployments")
        main = await client.read_resource("gguf://deployments/main")
    assert sorted(str(r.uri) for r in listed) == [
        "gguf://deployments",
        "gguf://deployments/main",
        "gguf://deployments/tools",
    ]
    everything = json.loads(index.contents[0].text)  # type: ignore[union-attr]
    assert [d["deployment"] for d in everything["deployments"]] == ["main", "tools"]
    (entry,) = json.loads(main.contents[0].text)["deployments"]  # type: ignore[union-attr]
    assert entry["models"][0]["id"] == target.model_id
    assert entry["models"][0]["context_size"] == target.n_ctx
