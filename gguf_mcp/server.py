"""The MCP server and its transports: stdio, and Streamable HTTP at /mcp with /healthz.

Knows nothing about GGUF Cloud beyond handing the tools an `AppState` from its lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gguf_mcp import __version__
from gguf_mcp.config import Settings
from gguf_mcp.resources import build_resources
from gguf_mcp.tools import AppState, build_tools
from gguf_mcp.upstream import open_upstream

INSTRUCTIONS = (
    "Tools to use private LLM deployments (llama.cpp on GGUF Cloud): list_models shows what is "
    "deployed; chat (OpenAI style), messages (Anthropic style) and complete (raw text) generate "
    "text; embed returns embedding vectors."
)
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def build_server(settings: Settings) -> MCPServer[AppState]:
    """An MCP server for these settings. Build a new one per transport run (the SDK's rule)."""

    live: list[AppState] = []  # the lifespan's state, for resources (they get no request context)

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        async with open_upstream(settings) as upstream:
            live[:] = [AppState(settings=settings, upstream=upstream)]
            try:
                yield live[0]
            finally:
                live.clear()

    server: MCPServer[AppState] = MCPServer(
        "gguf-mcp",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        tools=build_tools(settings),
        resources=build_resources(settings, lambda: live[0]),
        log_level=settings.log_level,  # type: ignore[arg-type]  # validated in config
    )

    @server.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator,unused-ignore]
    async def healthz(_: Request) -> Response:
        # Liveness only: no upstream call, nothing about the configuration.
        return JSONResponse({"status": "ok"})

    return server


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """Host and Origin checks on every bind address (DNS-rebinding protection)."""
    hosts = [*LOOPBACK]
    if settings.host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):  # noqa: S104 - a check, not a bind
        hosts.append(settings.host)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{h}:*" for h in hosts] + hosts,
        allowed_origins=[f"http://{h}:*" for h in hosts],
    )


async def serve(settings: Settings) -> None:
    """Run the configured transport until the client goes away or the process is stopped."""
    server = build_server(settings)
    if settings.transport == "stdio":
        await server.run_stdio_async()
        return

    import uvicorn

    app = server.streamable_http_app(
        streamable_http_path="/mcp", host=settings.host, transport_security=transport_security(settings)
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="on",
    )
    await uvicorn.Server(config).serve()
