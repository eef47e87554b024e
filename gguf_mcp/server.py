"""The MCP server: tools and resources over one upstream client, whatever the transport.

`build_server` makes the `MCPServer`; its lifespan hands every call the `AppState`, and its
middleware applies each caller's policy (`gguf_mcp.access`) before any tool or resource runs.
The CLI picks the transport (the SDK's own stdio, or `gguf_mcp.http`); this module knows neither.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

from gguf_mcp import __version__
from gguf_mcp.access import CallerPolicy
from gguf_mcp.resources import build_resources
from gguf_mcp.state import AppState
from gguf_mcp.tools import build_tools

INSTRUCTIONS = (
    "Tools to use private LLM deployments (llama.cpp on GGUF Cloud): list_models shows what is "
    "deployed; chat (OpenAI style), messages (Anthropic style) and complete (raw text) generate "
    "text; embed returns embedding vectors."
)


def build_server(
    state: AppState, *, token_verifier: TokenVerifier | None = None, auth: AuthSettings | None = None
) -> MCPServer[AppState]:
    """An MCP server over `state` (whose upstream client the caller opens and closes).

    Build a new one per transport run (the SDK's rule). `token_verifier` and `auth` (HTTP only,
    both or neither) make the SDK require a bearer token.
    """

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        yield state

    return MCPServer(
        "gguf-mcp",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        tools=build_tools(state.settings),
        resources=build_resources(state),
        log_level=state.settings.log_level,
        token_verifier=token_verifier,
        auth=auth,
        middleware=[CallerPolicy(state)],
    )
