"""The upstream client as the server builds it, for tests that talk to a deployment directly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.mcpserver import MCPServer

from gguf_mcp.config import Settings
from gguf_mcp.server import build_server
from gguf_mcp.state import AppState, open_state
from gguf_mcp.upstream import UpstreamClient, upstream_client


@asynccontextmanager
async def open_upstream(settings: Settings) -> AsyncIterator[UpstreamClient]:
    """The server's pooled client for `settings`, closed on exit."""
    http, upstream = upstream_client(settings)
    async with http:
        yield upstream


def offline_state(settings: Settings) -> AppState:
    """The state the server builds for `settings`, its upstream never used (the pool opens no client until a call)."""
    return open_state(settings, metrics=False)[1]


def offline_server(settings: Settings) -> MCPServer[AppState]:
    """An MCP server for `settings` whose upstream is never opened (for tools/list and schemas)."""
    return build_server(offline_state(settings))
