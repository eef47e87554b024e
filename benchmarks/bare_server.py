"""The SDK's floor: a bare MCPServer whose `chat` tool returns a constant without any upstream.

python -m benchmarks.bare_server                       # stdio
python -m benchmarks.bare_server http PORT [stateless] # Streamable HTTP on 127.0.0.1:PORT/mcp
"""

from __future__ import annotations

import sys
from typing import Any

from mcp.server.mcpserver import MCPServer

server = MCPServer("bare", log_level="WARNING")


@server.tool()
async def chat(
    messages: list[dict[str, Any]],
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
) -> dict[str, Any]:
    """Return a constant reply."""
    return {"text": "2yGX~+'Y", "finish_reason": "length"}


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        import uvicorn

        port = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
        app = server.streamable_http_app(stateless_http=sys.argv[3:4] == ["stateless"])
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    else:
        server.run()
