"""The GenAI usage attributes land on the span the MCP SDK opens for each tool call.

A real `MCPServer` and the official client, the OpenTelemetry SDK with its in-memory exporter as the
process's tracer provider (set once per process, as an application would; the exporter is shut
down afterwards so the rest of the session records nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gguf_mcp.clients import Caller, ClientPolicy
from gguf_mcp.config import load_settings
from gguf_mcp.fairshare import FairShare
from gguf_mcp.fairshare.tracing import annotate_span
from gguf_mcp.server import build_server
from gguf_mcp.state import open_state
from gguf_mcp.upstream import UpstreamClient
from tests.support.calls import Progress
from tests.support.gateway import ACCOUNT_KEY, Gateway
from tests.support.llama import LlamaServer


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory
    memory.shutdown()


async def test_the_tool_call_span_carries_the_model_and_the_usage(exporter: InMemorySpanExporter) -> None:
    server = MCPServer("traced")

    @server.tool()
    def chat(prompt: str) -> str:
        annotate_span("dep-main", "tiny-test-model", 17, 5)
        return "done"

    async with Client(server, mode="legacy") as client:
        result = await client.call_tool("chat", {"prompt": "hello"})
    assert not result.is_error
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "tools/call chat"]
    attributes = span.attributes or {}
    assert attributes["gen_ai.tool.name"] == "chat"  # the SDK's own span, not one of ours
    assert attributes["gen_ai.request.model"] == "dep-main"
    assert attributes["gen_ai.response.model"] == "tiny-test-model"
    assert attributes["gen_ai.usage.input_tokens"] == 17
    assert attributes["gen_ai.usage.output_tokens"] == 5


async def test_a_fair_share_call_annotates_the_span_when_it_ends(exporter: InMemorySpanExporter) -> None:
    settings = load_settings({}, {"GGUF_BASE_URL": "http://127.0.0.1:9"})
    fair_share = FairShare(
        UpstreamClient(httpx2.AsyncClient(), settings), read_timeout=5, max_concurrency={"default": 1}
    )  # a fixed slot count: nothing is asked of the (absent) deployment
    server = MCPServer("traced")

    @server.tool()
    async def complete(prompt: str) -> str:
        async with fair_share.call(Caller("team-a", ClientPolicy()), settings.deployments["default"], "complete") as c:
            c.usage(9, 3, "some-model")
        return "done"

    async with Client(server, mode="legacy") as client:
        await client.call_tool("complete", {"prompt": "hello"})
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "tools/call complete"]
    attributes = span.attributes or {}
    assert attributes["gen_ai.request.model"] == "default"
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (9, 3)


async def test_the_servers_tool_calls_carry_the_usage_on_the_sdks_span(
    exporter: InMemorySpanExporter, gw: Gateway, llama_server: LlamaServer, tmp_path: Path
) -> None:
    """gguf-mcp's own server (its state as the CLI builds it) over llama.cpp's, plain and streamed."""
    config = tmp_path / "gguf-mcp.toml"
    config.write_text(f'[deployments.dep-main]\nbase_url = "{gw.base_url_for("dep-main")}"\n')
    settings = load_settings({}, {"GGUF_MCP_CONFIG": str(config), "MODELSLAB_API_KEY": ACCOUNT_KEY})
    http, state = open_state(settings, metrics=False)
    messages = [{"role": "user", "content": "Hi"}]
    async with http, Client(build_server(state), mode="legacy") as client:
        plain = await client.call_tool("chat", {"messages": messages, "max_tokens": 3})
        streamed = await client.call_tool(
            "messages", {"messages": messages, "max_tokens": 4}, progress_callback=Progress()
        )
    spans = {s.name: s.attributes or {} for s in exporter.get_finished_spans() if s.name.startswith("tools/call")}
    chat_usage = (plain.structured_content or {})["usage"]
    messages_usage = (streamed.structured_content or {})["usage"]
    assert spans["tools/call chat"]["gen_ai.request.model"] == "dep-main"
    assert spans["tools/call chat"]["gen_ai.response.model"] == llama_server.model_id
    assert (
        spans["tools/call chat"]["gen_ai.usage.input_tokens"],
        spans["tools/call chat"]["gen_ai.usage.output_tokens"],
    ) == (
        chat_usage["prompt_tokens"],
        chat_usage["completion_tokens"],
    )
    assert (
        spans["tools/call messages"]["gen_ai.usage.input_tokens"],
        spans["tools/call messages"]["gen_ai.usage.output_tokens"],
    ) == (messages_usage["input_tokens"], messages_usage["output_tokens"])
