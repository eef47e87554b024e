"""`GET /metrics`: the fair share's Prometheus metrics (`gguf_mcp.fairshare.metrics`), in the text
format, or OpenMetrics when the scraper's `Accept` asks for it.

Every client's usage is there, so reading it is a right of its own: a bearer whose scopes include
`gguf:metrics` (a named client with `metrics = true`, `GGUF_MCP_AUTH_TOKEN`'s client `default`, an
OAuth token granted the scope). A server without client credentials serves it on loopback only.
The route is one of the app's probes (`app._probes`): a bare IP address is a valid Host (Prometheus
scrapes a pod by its address, which DNS rebinding never sends), and the route's own check below
says who may read it. The SDK's authentication runs app-wide and leaves its verdict in
`request.user`, but does not refuse for it on such a route; this endpoint does (`auth.scope_refusal`,
worded as `/mcp`'s refusals are).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from gguf_mcp.clients import METRICS_SCOPE
from gguf_mcp.http.auth import scope_refusal
from gguf_mcp.state import AppState

METRICS_PATH = "/metrics"


def metrics_endpoint(state: AppState) -> Callable[[Request], Awaitable[Response]]:
    """The `/metrics` endpoint over `state`'s metrics (404 when this process collects none)."""
    metrics = state.fairshare.metrics

    async def endpoint(request: Request) -> Response:
        refusal = scope_refusal(request, METRICS_SCOPE, state.settings)
        if refusal is not None:
            return refusal
        if metrics is None:
            return PlainTextResponse("This process collects no metrics", status_code=404)
        body, content_type = metrics.render(request.headers.get("accept"))
        return Response(body, headers={"content-type": content_type})

    return endpoint
