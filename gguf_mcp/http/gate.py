"""What every HTTP request passes before an endpoint sees it."""

from __future__ import annotations

import logging
import secrets

import anyio
from mcp.server.auth.provider import TokenVerifier
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gguf_mcp.http.auth import unauthorized
from gguf_mcp.http.hosts import HostRules, arrived_on_loopback, is_ip_literal, lowercase_host_and_origin
from gguf_mcp.logs import request_id

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
HEALTH_PATHS = ("/healthz", "/readyz")

_CLIENT_GONE = (anyio.ClosedResourceError, anyio.BrokenResourceError)
"""What the SDK (mcp 2.3) raises when a session closes under a request it has already answered.

A client that cancels a call and closes its session at once (llama-index does, per call): the
SDK answers the `notifications/cancelled` POST 202, then hands the message to the session, whose
stream the DELETE has just closed. It logs that ClosedResourceError with a traceback ("Error
handling POST request"), sends a 500 after the 202 (uvicorn: "Unexpected ASGI message
'http.response.start' sent, after response already completed") and raises again ("Exception in
ASGI application"). The client has its answer and is gone: RequestGate drops the second answer
and the exception (one debug line), and `ClientGoneFilter` the SDK's traceback.
"""


class ClientGoneFilter(logging.Filter):
    """Drops the SDK's traceback for a session closed under an answered request (see _CLIENT_GONE)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (record.msg == "Error handling POST request" and isinstance(error, _CLIENT_GONE))


class RequestGate:
    """The checks every HTTP request passes before any endpoint sees it (see the module docstring)."""

    def __init__(self, app: ASGIApp, security: TransportSecuritySettings, verifier: TokenVerifier | None) -> None:
        """`verifier` is the one the SDK checks too (`client_auth`), None when no token is set."""
        self._app = app
        self._rules = HostRules(security)
        self._has_token = verifier is not None
        self._verifier = verifier

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
            refusal = self._refusal(scope) or await self._unauthenticated(scope)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
            else:
                await self._app(lowercase_host_and_origin(scope), receive, send_with_id)
        except _CLIENT_GONE as exc:
            if not answered:
                raise
            log.debug("The session closed while its answered request was still being handled (%r)", exc)
        finally:
            request_id.reset(token)

    def _refusal(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        path: str = scope["path"]
        origin = headers.get("origin")
        if origin is not None and not self._rules.origin(origin):
            log.warning("Refused Origin %.100r: add it to GGUF_MCP_ALLOWED_ORIGINS if it is yours", origin)
            return PlainTextResponse("Invalid Origin header", status_code=403)
        host = headers.get("host", "")
        if not (self._rules.host(host) or (path in HEALTH_PATHS and is_ip_literal(host))):
            log.warning("Refused Host %.100r: add it to GGUF_MCP_ALLOWED_HOSTS if it is yours", host)
            return PlainTextResponse("Invalid Host header", status_code=421)
        if path != MCP_PATH:
            return None
        if scope["method"] == "GET" and not self._has_token:
            return PlainTextResponse("No standalone event stream; POST requests", 405, {"allow": "POST, DELETE"})
        if not self._has_token and not arrived_on_loopback(scope):
            log.error(
                "Refused a request that reached %s, a non-loopback address, with no client token set: set "
                "GGUF_MCP_AUTH_TOKEN, or bind 127.0.0.1",
                scope["server"][0],
            )
            return PlainTextResponse("This server is reachable beyond loopback without a token", 403)
        return None

    async def _unauthenticated(self, scope: Scope) -> Response | None:
        """401 for a request to /mcp without the token, whatever its method (the SDK checks again after us).

        Before anything else the endpoint says, so a wrong token never reads as '405 Method Not Allowed'.
        """
        if self._verifier is None or scope["path"] != MCP_PATH:
            return None
        authorization = Headers(scope=scope).get("authorization", "")
        if authorization[:7].lower() == "bearer " and await self._verifier.verify_token(authorization[7:]):
            if scope["method"] == "GET":
                return PlainTextResponse("No standalone event stream; POST requests", 405, {"allow": "POST, DELETE"})
            return None
        return unauthorized()
