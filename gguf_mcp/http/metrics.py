"""`GET /metrics`: the fair share's Prometheus metrics (`gguf_mcp.fairshare.metrics`), in the text
format, or OpenMetrics when the scraper's `Accept` asks for it.

Every client's usage is there, so reading it is a right of its own: a bearer whose scopes include
`gguf:metrics` (a named client with `metrics = true`, `GGUF_MCP_AUTH_TOKEN`'s client `default`, an
OAuth token granted the scope). A server without client credentials serves it to loopback only,
like every route of its (the route's checks, `gate.py`, refuse the rest). The route is the SDK's
`custom_route`: the SDK's authentication runs app-wide and leaves its verdict in `request.user`,
but does not refuse for it; this endpoint does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from gguf_mcp.clients import METRICS_SCOPE
from gguf_mcp.state import AppState

METRICS_PATH = "/metrics"
NEEDS_SCOPE = (
    f"Reading {METRICS_PATH} needs a client token with the {METRICS_SCOPE} scope "
    "(a [clients.<name>] table with metrics = true, or GGUF_MCP_AUTH_TOKEN)"
)


def has_scope(request: Request, scope: str) -> bool:
    """Whether the request's bearer, as the SDK verified it, was granted `scope`."""
    user = request.scope.get("user")
    return isinstance(user, AuthenticatedUser) and scope in user.scopes


def metrics_endpoint(state: AppState) -> Callable[[Request], Awaitable[Response]]:
    """The `/metrics` endpoint over `state`'s metrics (404 when this process collects none)."""
    metrics = state.fairshare.metrics
    credentials = state.settings.auth_required

    async def endpoint(request: Request) -> Response:
        if credentials and not has_scope(request, METRICS_SCOPE):
            return _refusal(request)
        if metrics is None:
            return PlainTextResponse("This process collects no metrics", status_code=404)
        body, content_type = metrics.render(request.headers.get("accept"))
        return Response(body, headers={"content-type": content_type})

    return endpoint


def _refusal(request: Request) -> Response:
    """401 without a valid bearer, 403 with one that lacks the scope (RFC 6750's codes)."""
    if isinstance(request.scope.get("user"), AuthenticatedUser):
        challenge = f'Bearer error="insufficient_scope", scope="{METRICS_SCOPE}"'
        return PlainTextResponse(NEEDS_SCOPE, status_code=403, headers={"www-authenticate": challenge})
    challenge = 'Bearer error="invalid_token", error_description="Authentication required"'
    return PlainTextResponse(NEEDS_SCOPE, status_code=401, headers={"www-authenticate": challenge})
