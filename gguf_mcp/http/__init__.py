"""Streamable HTTP: the MCP endpoint, health, and the guards in front of them.

One owner per check. The rooms, outermost first:
- `connections`: before any request, deadlines for each request's header and body and a cap on
  open connections (`GuardedH11Protocol`, uvicorn's HTTP/1.1 protocol plus those guards);
- `gate`: a request id on every request, then each route's own checks (Host and Origin, parsed
  by `hosts`, the only such check; a server without a token answers loopback only; `/mcp`'s 405);
- `auth`: the clients' credentials, which the SDK alone checks (`token_verifier`: gguf_mcp.identity),
  and how its refusals read (401, 503 while the issuer cannot be asked, 403 `insufficient_scope`;
  `scope_refusal` for a route that needs one scope, such as `/metrics`);
- `reloading`: SIGHUP reads the clients again;
- `readiness`: `/healthz` and `/readyz`;
- `app`: the app itself (the SDK's, with our routes added), and how it runs: `serve_http` for
  `gguf-mcp --transport http`, and `create_app` for `uvicorn --factory gguf_mcp.http:create_app`.

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
