"""What a caller may use (gguf_mcp.access): the rules, then the server applying them to the client
`default` over stdio, as users run it (a subprocess and the official client).

Over HTTP with named clients and OAuth, tests/test_http_identity.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client

from gguf_mcp.access import resource_refusal, tool_refusal, visible_tool
from gguf_mcp.clients import Caller, ClientPolicy
from gguf_mcp.config import load_settings
from gguf_mcp.server import build_server
from gguf_mcp.state import AppState
from tests.support.bridge import base_env
from tests.support.calls import text_of
from tests.support.gateway import ACCOUNT_KEY, Gateway
from tests.support.upstream import offline_state as offline_state_of

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


def offline_state(workdir: Path, clients: str = "") -> AppState:
    """Deployments alpha (the default), beta and gamma, and `clients`; the upstream is never used."""
    config = workdir / "gguf-mcp.toml"
    tables = "".join(f'[deployments.{n}]\nbase_url = "http://127.0.0.1:9"\n' for n in ("alpha", "beta", "gamma"))
    config.write_text(tables + clients)
    settings = load_settings({}, {"GGUF_MCP_CONFIG": str(config)})
    return offline_state_of(settings)


@pytest.fixture
def state(tmp_path: Path) -> AppState:
    return offline_state(tmp_path)


def caller(**policy: Any) -> Caller:
    return Caller("ci", ClientPolicy(**policy))


def refusal(state: AppState, who: Caller, tool: str, **arguments: Any) -> str | None:
    found = tool_refusal(state, who, tool, arguments)
    return None if found is None else str(found)


def test_a_tool_outside_the_callers_scopes_is_refused_naming_the_scope(state: AppState) -> None:
    who = caller(scopes=frozenset({"gguf:models"}), tools=frozenset({"list_models"}))
    assert refusal(state, who, "embed") == (
        "Client 'ci' may not use tool embed: it needs the scope gguf:embed, and this client has gguf:models. Nothing "
        "was sent. An OAuth client signs in again asking for gguf:embed; a named client's table lists it in `scopes`."
    )
    assert refusal(state, who, "list_models") is None


def test_a_tool_outside_the_callers_tools_list_is_refused_naming_the_list(state: AppState) -> None:
    who = caller(tools=frozenset({"chat", "list_models"}))
    assert "may not call complete: its tools are chat, list_models" in str(refusal(state, who, "complete"))
    assert refusal(state, who, "no_such_tool") is None  # the SDK's own "Unknown tool" answers it


def test_a_deployment_outside_the_callers_list_is_refused_naming_its_own(state: AppState) -> None:
    who = caller(deployments=frozenset({"beta", "gamma"}))
    assert "may not use deployment 'alpha'. Its deployments: beta, gamma" in str(
        refusal(state, who, "chat", deployment="alpha")
    )
    assert refusal(state, who, "chat", deployment="beta") is None
    # No deployment: the default (alpha) is not the caller's, except for list_models, which lists its own.
    assert "the default one ('alpha') is not one client 'ci' may use" in str(refusal(state, who, "chat"))
    assert refusal(state, who, "list_models") is None
    assert refusal(state, caller(deployments=frozenset({"alpha"})), "chat") is None


def test_the_deployment_enum_lists_only_the_callers_deployments() -> None:
    tool: dict[str, Any] = {
        "name": "chat",
        "inputSchema": {
            "type": "object",
            "properties": {"deployment": {"anyOf": [{"type": "string", "enum": ["alpha", "beta"]}, {"type": "null"}]}},
        },
    }
    shown = visible_tool(tool, ClientPolicy(deployments=frozenset({"beta"})))
    assert shown["inputSchema"]["properties"]["deployment"]["anyOf"][0]["enum"] == ["beta"]
    assert tool["inputSchema"]["properties"]["deployment"]["anyOf"][0]["enum"] == ["alpha", "beta"]  # not changed
    assert visible_tool(tool, ClientPolicy()) is tool


def test_resources_need_the_models_scope_and_name_only_the_callers_deployments() -> None:
    assert "needs the scope gguf:models" in str(resource_refusal(caller(scopes=frozenset()), "gguf://deployments"))
    restricted = caller(deployments=frozenset({"beta"}))
    assert resource_refusal(restricted, "gguf://deployments") is None
    assert resource_refusal(restricted, "gguf://deployments/beta") is None
    assert "Its deployments: beta" in str(resource_refusal(restricted, "gguf://deployments/alpha"))


async def test_over_stdio_the_default_clients_table_restricts_it_and_its_log_lines_name_it(
    gateway: Gateway, tmp_path: Path
) -> None:
    gateway.add_canned_deployment("alpha")
    config = tmp_path / "gguf-mcp.toml"
    config.write_text(
        f'[deployments.alpha]\nbase_url = "{gateway.base_url_for("alpha")}"\n\n'
        '[clients.default]\ntools = ["list_models"]\n'
    )
    env = base_env() | {
        "GGUF_MCP_CONFIG": str(config),
        "MODELSLAB_API_KEY": ACCOUNT_KEY,
        "GGUF_MCP_LOG_LEVEL": "info",
    }
    params = StdioServerParameters(command=sys.executable, args=["-m", "gguf_mcp"], env=env)
    stderr = tmp_path / "stderr"
    with stderr.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            tools = [tool.name for tool in (await client.list_tools()).tools]
            refused = await client.call_tool("chat", CHAT)
            listed = await client.call_tool("list_models", {})

    assert tools == ["list_models"]
    assert refused.is_error and "Client 'default' may not call chat: its tools are list_models" in text_of(refused)
    assert not listed.is_error
    assert [r.path for r in gateway.requests] == ["/v1/models"]  # the refused chat sent nothing
    assert "INFO gguf_mcp.access: [client default] Refused a call of 'chat'" in stderr.read_text()


async def test_in_process_a_server_without_an_identity_applies_the_configured_default(tmp_path: Path) -> None:
    """`AppState.identity` unset (built by hand, as `gguf-mcp ask` does): the clients as loaded."""
    server = build_server(offline_state(tmp_path, '[clients.default]\nscopes = ["gguf:embed"]\n'))
    async with Client(server) as client:
        assert [tool.name for tool in (await client.list_tools()).tools] == ["embed"]
        with pytest.raises(MCPError, match="needs the scope gguf:models"):
            await client.read_resource("gguf://deployments/alpha")
