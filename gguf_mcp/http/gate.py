"""What HTTP requests pass before an endpoint answers.

Every request, whatever its path (`RequestIds`): an id, returned as `X-Request-Id` and in the
logs; and a client gone under an answered request is not a server error (see _CLIENT_GONE).

Each route's requests (`guard_routes`), its checks attached to the route itself so that they see
the path the router matched, whatever uvicorn's `--root-path`:
- Host and Origin (`hosts.HostRules`, the only such check): 421 or 403. Probe routes (`/healthz`,
  `/readyz`) also accept a bare IP address as Host, which Kubernetes probes send and DNS
  rebinding never does;
- a server without client credentials answers only requests that reached a loopback address
  (403), probes aside, however it was started (uvicorn's CLI does not tell the app its --host);
- on `/mcp`, behind the SDK's auth verdict (so a request without a valid token hears 401 whatever
  its method): the one 405, for every method the endpoint does not serve (GET: no standalone
  event stream, so no stream outlives its call and idle clients never hold a shutdown up).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection, Sequence

import anyio
from mcp.server.auth.middleware.bearer_auth import RequireAuthMiddleware
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gguf_mcp.http.auth import NamingTheHeader, missing_token_hint
from gguf_mcp.http.hosts import HostRules, arrived_on_loopback, is_ip_literal
from gguf_mcp.logs import request_id

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"

_CLIENT_GONE = (anyio.ClosedResourceError, anyio.BrokenResourceError)
"""What the SDK (mcp 2.3) raises when a session closes under a request it has already answered.

A client that cancels a call and closes its session at once (llama-index does, per call): the
SDK answers the `notifications/cancelled` POST 202, then hands the message to the session, whose
stream the DELETE has just closed. It logs that ClosedResourceError with a traceback ("Error
handling POST request"), sends a 500 after the 202 (uvicorn: "Unexpected ASGI message
'http.response.start' sent, after response already completed") and raises again ("Exception in
ASGI application"). The client has its answer and is gone: RequestIds drops the second answer
and the exception (one debug line), and `ClientGoneFilter` the SDK's traceback.
"""


class ClientGoneFilter(logging.Filter):
    """Drops the SDK's traceback for a client gone: its session closed under an answered request
    (see _CLIENT_GONE), or its connection closed before the request's body was complete (by the
    client, or by the body deadline of connections.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        gone = isinstance(error, (*_CLIENT_GONE, ClientDisconnect))
        return not (gone and record.msg == "Error handling POST request")


class RequestIds:
    """A request id for every HTTP request (context variable and `X-Request-Id`); one answer per request."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        rid = secrets.token_hex(8)
        token = request_id.set(rid)
        answered = False

        async def send_with_id(message: Message) -> None:
            nonlocal answered
            if answered:
                return  # a second answer to one request: see _CLIENT_GONE
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", rid.encode())]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        try:
            await self._app(scope, receive, send_with_id)
        except _CLIENT_GONE as exc:
            if not answered:
                raise
            log.debug("The session closed while its answered request was still being handled (%r)", exc)
        finally:
            request_id.reset(token)


def guard_routes(app: Starlette, rules: HostRules, probes: Collection[str], mcp_methods: Sequence[str]) -> None:
    """Attach its checks to each route of `app` (the SDK's app: `/mcp`, and the routes added to it).

    `probes` are the paths that answer a bare IP address as Host; `mcp_methods` those `/mcp` serves.
    Whether the server has client credentials is the SDK's to say: its `/mcp` requires them.
    """
    routes = [route for route in app.routes if isinstance(route, Route)]
    if len(routes) != len(app.routes):
        raise TypeError(f"unexpected routes in the SDK's app (not starlette.routing.Route): {app.routes!r}")
    mcp = next(route for route in routes if route.path == MCP_PATH)
    credentials = isinstance(mcp.app, RequireAuthMiddleware)
    mcp.app = _behind_the_verdict(mcp.app, mcp_methods)
    for route in routes:
        probe = route.path in probes
        route.app = _RouteChecks(route.app, rules, probe=probe, loopback_only=not (probe or credentials))


def _behind_the_verdict(endpoint: ASGIApp, methods: Sequence[str]) -> ASGIApp:
    """`/mcp`'s endpoint with the 405 between the SDK's auth and its transport, and the 401 explained.

    The SDK offers no hook there: its app routes `/mcp` to `RequireAuthMiddleware(transport)` when
    a token verifier is set (else to the transport), so the 405 wraps `RequireAuthMiddleware.app`.
    """
    if not isinstance(endpoint, RequireAuthMiddleware):
        return _ServedMethods(endpoint, methods)
    endpoint.app = _ServedMethods(endpoint.app, methods)
    return NamingTheHeader(endpoint, missing_token_hint())


class _ServedMethods:
    """The one 405 of `/mcp`: anything but `methods` (POST, and DELETE when sessions are kept)."""

    def __init__(self, app: ASGIApp, methods: Sequence[str]) -> None:
        self._app = app
        self._methods = frozenset(methods)
        self._allow = ", ".join(methods)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in self._methods:
            text = f"{scope['method']} is not served here: send MCP requests with POST (no standalone event stream)"
            await PlainTextResponse(text, 405, {"allow": self._allow})(scope, receive, send)
            return
        await self._app(scope, receive, send)


class _RouteChecks:
    """Host and Origin, then (for a server without client credentials) arrival on loopback."""

    def __init__(self, app: ASGIApp, rules: HostRules, *, probe: bool, loopback_only: bool) -> None:
        self._app = app
        self._rules = rules
        self._probe = probe
        self._loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self._refusal(scope) if scope["type"] == "http" else None
        if refusal is None:
            await self._app(scope, receive, send)
        else:
            await refusal(scope, receive, send)

    def _refusal(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is not None and not self._rules.origin(origin):
            log.warning("Refused Origin %.100r: add it to GGUF_MCP_ALLOWED_ORIGINS if it is yours", origin)
            return PlainTextResponse("Invalid Origin header", status_code=403)
        host = headers.get("host", "")
        if not (self._rules.host(host) or (self._probe and is_ip_literal(host))):
            log.warning("Refused Host %.100r: add it to GGUF_MCP_ALLOWED_HOSTS if it is yours", host)
            return PlainTextResponse("Invalid Host header", status_code=421)
        if self._loopback_only and not arrived_on_loopback(scope):
            log.error(
                "Refused a request that reached %s, a non-loopback address, with no client token set: set "
                "GGUF_MCP_AUTH_TOKEN, or bind 127.0.0.1",
                scope["server"][0],
            )
            return PlainTextResponse("This server is reachable beyond loopback without a token", 403)
        return None
