"""The SDK's floor: a bare MCPServer whose `chat` tool returns a constant without any upstream."""

from __future__ import annotations

import sys
from typing import Any

from mcp.server.mcpserver import MCPServer

server = MCPServer("bare", log_level="WARNING")


@server.tool()
async def chat(messages: list[dict[str, Any]], max_tokens: int | None = None) -> dict[str, Any]:
    """Return a constant reply."""
    return {"text": "2yGX~+'Y", "finish_reason": "length"}


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        import uvicorn

        port = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
        uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=port, log_level="warning")
    else:
        server.run()
