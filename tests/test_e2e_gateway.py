"""End to end through the GGUF Cloud gateway emulator: what gguf-mcp puts on the wire (auth
headers, paths, bodies), where it sends each named deployment, and how it retries.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from gguf_mcp import __version__
from tests.support.bridge import Bridge
from tests.support.calls import env_for, text_of
from tests.support.gateway import ACCOUNT_KEY, Exchange, Fault, Gateway
from tests.support.tiny_model import N_CTX

USER = [{"role": "user", "content": "Hello there"}]
WRONG_KEY = "sk-canary-wrong-key-31f0c2d9e8"


@pytest.fixture(autouse=True)
def _canary_never_leaks(bridge: Bridge) -> object:
    yield None
    seen = bridge.seen_text()
    assert ACCOUNT_KEY not in seen
    assert WRONG_KEY not in seen


async def test_openai_routes_send_bearer_and_messages_sends_x_api_key(bridge: Bridge, gw: Gateway) -> None:
    async with bridge.connect(env_for(gw)) as client:
        await client.call_tool("list_models", {})
        await client.call_tool("chat", {"messages": USER, "max_tokens": 1})
        await client.call_tool("messages", {"messages": USER, "max_tokens": 1})
    by_path = {r.path: r for r in gw.requests_for("dep-main")}
    assert set(by_path) == {"/v1/models", "/v1/chat/completions", "/v1/messages"}
    for path in ("/v1/models", "/v1/chat/completions"):
        request = by_path[path]
        assert request.auth_via == "bearer"
        assert request.headers["authorization"] == f"Bearer {ACCOUNT_KEY}"
        assert "x-api-key" not in request.headers
    anthropic = by_path["/v1/messages"]
    assert anthropic.auth_via == "x-api-key"
    assert anthropic.headers["x-api-key"] == ACCOUNT_KEY
    assert anthropic.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in anthropic.headers
    for request in by_path.values():
        assert request.headers["user-agent"] == f"gguf-mcp/{__version__}"


async def test_request_bodies_carry_exactly_the_callers_arguments(bridge: Bridge, gw: Gateway) -> None:
    chat_args = {"messages": USER, "max_tokens": 3, "temperature": 0.5, "top_p": 0.9, "stop": ["\n"], "seed": 7}
    msg_args = {"messages": USER, "max_tokens": 3, "system": "sys", "top_k": 40, "stop_sequences": ["x"]}
    async with bridge.connect(env_for(gw)) as client:
        await client.call_tool("chat", chat_args)
        await client.call_tool("messages", msg_args)
    chat, msg = (r.json for r in gw.requests_for("dep-main"))
    assert chat == {"model": "local", **chat_args}
    assert msg == {"model": "local", **msg_args}
    assert all(r.headers["content-type"] == "application/json" for r in gw.requests_for("dep-main"))


async def test_every_base_url_form_reaches_the_same_routes(bridge: Bridge, gw: Gateway, tmp_path: Path) -> None:
    root = gw.base_url_for("dep-main")
    forms = {"root": root, "slash": root + "/", "v1": root + "/v1", "v1slash": root + "/v1/"}
    config = tmp_path / "forms.toml"
    config.write_text("".join(f'[deployments.{name}]\nbase_url = "{url}"\n' for name, url in forms.items()))
    async with bridge.connect({"GGUF_MCP_CONFIG": str(config), "MODELSLAB_API_KEY": ACCOUNT_KEY}) as client:
        for name in forms:
            assert not (
                await client.call_tool("chat", {"messages": USER, "max_tokens": 1, "deployment": name})
            ).is_error
            assert not (
                await client.call_tool("messages", {"messages": USER, "max_tokens": 1, "deployment": name})
            ).is_error
    paths = [r.path for r in gw.requests_for("dep-main")]
    assert paths == ["/v1/chat/completions", "/v1/messages"] * len(forms)


async def test_named_deployments_route_to_their_own_upstream(bridge: Bridge, gw: Gateway, tmp_path: Path) -> None:
    config = tmp_path / "named.toml"
    config.write_text(
        'default = "other"\n'
        f'[deployments.main]\nbase_url = "{gw.base_url_for("dep-main")}"\n'
        f'[deployments.other]\nbase_url = "{gw.base_url_for("dep-other")}"\n'
    )
    async with bridge.connect({"GGUF_MCP_CONFIG": str(config), "MODELSLAB_API_KEY": ACCOUNT_KEY}) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        await client.call_tool("chat", {"messages": USER, "max_tokens": 1, "deployment": "main"})
        await client.call_tool("chat", {"messages": USER, "max_tokens": 1})  # the default: other
        await client.call_tool("messages", {"messages": USER, "max_tokens": 1, "deployment": "other"})
        unknown = await client.call_tool("chat", {"messages": USER, "deployment": "../dep-main"})
    assert tools["chat"].input_schema["properties"]["deployment"]["anyOf"][0]["enum"] == ["main", "other"]
    assert [r.path for r in gw.requests_for("dep-main")] == ["/v1/chat/completions"]
    assert [r.path for r in gw.requests_for("dep-other")] == ["/v1/chat/completions", "/v1/messages"]
    assert unknown.is_error
    assert "Unknown deployment '../dep-main'. Configured deployments: main, other." in text_of(unknown)


async def test_list_models_one_failure_does_not_hide_the_others(bridge: Bridge, gw: Gateway, tmp_path: Path) -> None:
    gw.set_unknown("dep-other", True)
    config = tmp_path / "two.toml"
    config.write_text(
        f'[deployments.main]\nbase_url = "{gw.base_url_for("dep-main")}"\n'
        f'[deployments.gone]\nbase_url = "{gw.base_url_for("dep-other")}"\n'
    )
    async with bridge.connect({"GGUF_MCP_CONFIG": str(config), "MODELSLAB_API_KEY": ACCOUNT_KEY}) as client:
        result = await client.call_tool("list_models", {})
    assert not result.is_error
    assert result.structured_content is not None
    entries = {d["deployment"]: d for d in result.structured_content["deployments"]}
    assert entries["main"]["models"][0]["id"]
    assert "was not found (HTTP 404" in entries["gone"]["error"]
    assert "gone: error:" in text_of(result)


class AllAtOnce(Fault):
    """Answers only once `expected` requests are open at the same time (the deployments asked
    at once); asked one after another, the first waits in vain and gets a 500."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.arrived = 0
        self.together: anyio.Event | None = None

    async def answer(self, exchange: Exchange) -> None:
        self.together = self.together or anyio.Event()  # made on the gateway's own event loop
        self.arrived += 1
        if self.arrived == self.expected:
            self.together.set()
        with anyio.move_on_after(10):
            await self.together.wait()
        if not self.together.is_set():
            await exchange.reply(500, b'{"error": {"message": "asked one after another"}}', "application/json")
            return
        await exchange.pass_through()


async def test_list_models_asks_every_deployment_at_once(bridge: Bridge, gw: Gateway, tmp_path: Path) -> None:
    together = AllAtOnce(expected=2)
    gw.inject("dep-main", together)
    gw.inject("dep-other", together)
    config = tmp_path / "two.toml"
    config.write_text(
        f'[deployments.a]\nbase_url = "{gw.base_url_for("dep-main")}"\n'
        f'[deployments.b]\nbase_url = "{gw.base_url_for("dep-other")}"\n'
    )
    async with bridge.connect({"GGUF_MCP_CONFIG": str(config), "MODELSLAB_API_KEY": ACCOUNT_KEY}) as client:
        result = await client.call_tool("list_models", {})
    assert result.structured_content is not None
    assert [d.get("error") for d in result.structured_content["deployments"]] == [None, None], text_of(result)


async def test_not_ready_and_restarting_are_retried_until_success(bridge: Bridge, gw: Gateway) -> None:
    gw.fail_next("dep-main", 503, count=1)
    gw.fail_next("dep-main", 502, count=1)
    async with bridge.connect(env_for(gw, GGUF_MCP_MAX_RETRIES="3")) as client:
        result = await client.call_tool("chat", {"messages": USER, "max_tokens": 1})
    assert not result.is_error
    assert len(gw.requests_for("dep-main")) == 3


async def test_a_storm_longer_than_the_retries_is_reported(bridge: Bridge, gw: Gateway) -> None:
    gw.fail_next("dep-main", 503, count=10)
    async with bridge.connect(env_for(gw, GGUF_MCP_MAX_RETRIES="2")) as client:
        result = await client.call_tool("messages", {"messages": USER, "max_tokens": 1})
    assert result.is_error
    assert "is not ready (HTTP 503" in text_of(result)
    assert "gave up after 3 attempts" in text_of(result)
    assert len(gw.requests_for("dep-main")) == 3


async def test_rejected_key_is_reported_and_never_retried(bridge: Bridge, gw: Gateway) -> None:
    async with bridge.connect(env_for(gw, MODELSLAB_API_KEY=WRONG_KEY)) as client:
        chat = await client.call_tool("chat", {"messages": USER, "max_tokens": 1})
        msg = await client.call_tool("messages", {"messages": USER, "max_tokens": 1})
    for result in (chat, msg):
        assert result.is_error
        assert "rejected the API key (HTTP 401" in text_of(result)
        assert "Check MODELSLAB_API_KEY" in text_of(result)
    assert len(gw.requests) == 2


async def test_unknown_deployment_is_reported_and_never_retried(bridge: Bridge, gw: Gateway) -> None:
    gw.set_unknown("dep-main", True)
    async with bridge.connect(env_for(gw)) as client:
        result = await client.call_tool("chat", {"messages": USER, "max_tokens": 1})
    assert result.is_error
    assert "was not found (HTTP 404" in text_of(result)
    assert "deployment id" in text_of(result)
    assert len(gw.requests_for("dep-main")) == 1


async def test_llama_server_rejections_pass_through_unretried(bridge: Bridge, gw: Gateway) -> None:
    too_long = [{"role": "user", "content": "x" * (N_CTX + 1000)}]  # one token per byte: past the context
    async with bridge.connect(env_for(gw)) as client:
        result = await client.call_tool("chat", {"messages": too_long, "max_tokens": 1})
    assert result.is_error
    assert "rejected the request (HTTP 400)" in text_of(result)
    assert "exceeds the available context size" in text_of(result)
    assert len(gw.requests_for("dep-main")) == 1


async def test_a_proxy_html_page_is_reported_as_not_json(bridge: Bridge, gw: Gateway) -> None:
    gw.fail_next("dep-main", 200, body=b"<html><body>Welcome to nginx!</body></html>", content_type="text/html")
    async with bridge.connect(env_for(gw)) as client:
        result = await client.call_tool("chat", {"messages": USER, "max_tokens": 1})
        after = await client.call_tool("chat", {"messages": USER, "max_tokens": 1})
    assert result.is_error
    assert "a body that is not JSON (content-type text/html" in text_of(result)
    assert not after.is_error


async def test_connection_refused_is_reported(bridge: Bridge, gw: Gateway) -> None:
    from tests.support.bridge import free_port

    env = {"GGUF_BASE_URL": f"http://127.0.0.1:{free_port()}", "GGUF_MCP_MAX_RETRIES": "0"}
    async with bridge.connect(env) as client:
        result = await client.call_tool("chat", {"messages": USER, "max_tokens": 1})
    assert result.is_error
    assert "could not be reached" in text_of(result)
