"""The MCP server and its transports: stdio here, Streamable HTTP in `gguf_mcp.http`.

Knows nothing about GGUF Cloud beyond handing the tools an `AppState` from its lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

from gguf_mcp import __version__
from gguf_mcp.config import Settings
from gguf_mcp.resources import build_resources
from gguf_mcp.stdio import run_stdio
from gguf_mcp.tools import AppState, build_tools
from gguf_mcp.upstream import open_upstream

INSTRUCTIONS = (
    "Tools to use private LLM deployments (llama.cpp on GGUF Cloud): list_models shows what is "
    "deployed; chat (OpenAI style), messages (Anthropic style) and complete (raw text) generate "
    "text; embed returns embedding vectors."
)


def build_server(
    settings: Settings, *, token_verifier: TokenVerifier | None = None, auth: AuthSettings | None = None
) -> MCPServer[AppState]:
    """An MCP server for these settings. Build a new one per transport run (the SDK's rule).

    `token_verifier` and `auth` (HTTP only, both or neither) make the SDK require a bearer token.
    """

    live: list[AppState] = []  # the lifespan's state, for resources (they get no request context)

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        async with open_upstream(settings) as upstream:
            live[:] = [AppState(settings=settings, upstream=upstream)]
            try:
                yield live[0]
            finally:
                live.clear()

    return MCPServer(
        "gguf-mcp",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        tools=build_tools(settings),
        resources=build_resources(settings, lambda: live[0]),
        log_level=settings.log_level,  # type: ignore[arg-type]  # validated in config
        token_verifier=token_verifier,
        auth=auth,
    )


async def serve(settings: Settings) -> None:
    """Run the configured transport until the client goes away or the process is stopped."""
    if settings.transport == "http":
        from gguf_mcp.http import serve_http

        await serve_http(settings)
        return
    await run_stdio(build_server(settings))
