"""The upstream client as the server builds it, for tests that talk to a deployment directly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from mcp.server.mcpserver import MCPServer

from gguf_mcp.config import Settings
from gguf_mcp.fairshare import FairShare
from gguf_mcp.server import build_server
from gguf_mcp.state import AppState
from gguf_mcp.upstream import UpstreamClient, upstream_client


@asynccontextmanager
async def open_upstream(settings: Settings) -> AsyncIterator[UpstreamClient]:
    """The server's pooled client for `settings`, closed on exit."""
    http, upstream = upstream_client(settings)
    async with http:
        yield upstream


def offline_server(settings: Settings) -> MCPServer[AppState]:
    """An MCP server for `settings` whose upstream is never opened (for tools/list and schemas)."""
    upstream = UpstreamClient(httpx2.AsyncClient(), settings)
    return build_server(AppState(settings, upstream, fairshare=FairShare.for_settings(settings, upstream)))
