"""Streamable HTTP: the MCP endpoint, health, and the guards in front of them.

The rooms, outermost first:
- `connections`: before any request, a deadline for each request header and a cap on open
  connections (`GuardedH11Protocol`, uvicorn's HTTP/1.1 protocol plus those guards);
- `gate`: what every request passes (a request id; Host and Origin, parsed by `hosts`; the
  exposure of a server without a token);
- `auth`: the clients' bearer token, which the SDK checks (`token_verifier`);
- `readiness`: `/healthz` and `/readyz`;
- `app`: the app itself, and how it runs: `serve_http` for `gguf-mcp --transport http`, and
  `create_app` for `uvicorn --factory gguf_mcp.http:create_app --workers N`.

`create_app` and `GuardedH11Protocol` are named here because users type these paths into uvicorn's
command line (`--factory gguf_mcp.http:create_app --http gguf_mcp.http:GuardedH11Protocol`).
"""

from gguf_mcp.http.app import MAX_REQUEST_BODY, SHUTDOWN_GRACE_S, build_app, create_app, serve_http
from gguf_mcp.http.connections import GuardedH11Protocol
from gguf_mcp.http.readiness import PROBE_TIMEOUT_S, READY_TTL_S

__all__ = [
    "MAX_REQUEST_BODY",
    "PROBE_TIMEOUT_S",
    "READY_TTL_S",
    "SHUTDOWN_GRACE_S",
    "GuardedH11Protocol",
    "build_app",
    "create_app",
    "serve_http",
]
