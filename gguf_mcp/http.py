"""Streamable HTTP: every piece of HTTP wiring lives here.

One ASGI app (`build_app`) serves MCP at `/mcp`, liveness at `/healthz` and readiness at
`/readyz`. `serve_http` runs it under uvicorn for `gguf-mcp --transport http`; `create_app` is
the same app as a factory for several worker processes (`uvicorn --factory
gguf_mcp.http:create_app --workers N`), with settings read from the environment.

Before any request: each connection must complete a request header within a deadline, and past
a cap on open connections the one waiting longest for its header is closed (`GuardedH11Protocol`,
uvicorn's own protocol plus those two guards).

What every request goes through, outermost first (`RequestGate`):
- a request id, for the logs and the `X-Request-Id` response header;
- Origin (a foreign one: 403) and Host (a foreign one: 421), parsed and compared exactly and
  case-insensitively, whatever the bind address; the health endpoints also accept a bare IP
  address as Host, which is what orchestrators' probes send and what DNS rebinding never produces;
- on `/mcp`, with a client token set: the token, whatever the method (401 with `WWW-Authenticate`
  and a body naming the header to send), before the endpoint says anything else;
- on `/mcp`: GET is refused (405: no standalone event stream, so nothing outlives its call and
  a shutdown never waits on idle streams), and a request that reached a non-loopback address of
  a server without a token is refused (the bind is wider than the settings admit);
- then the SDK: the bearer token again, the body size limit (413), and its own Host/Origin check
  with the same lists (Host and Origin are passed on lowercased, as they were matched).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import math
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import uvicorn
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, TransportSecuritySettings
from pydantic import SecretStr
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.h11_impl import H11Protocol

from gguf_mcp.config import OPTION_BY_DEST, Settings, load_settings
from gguf_mcp.errors import ConfigError, report_config_error
from gguf_mcp.health import check_all
from gguf_mcp.logs import configure_logging, request_id
from gguf_mcp.server import build_server
from gguf_mcp.tools import AppState
from gguf_mcp.upstream import NO_RETRY, upstream_client

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
HEALTH_PATHS = ("/healthz", "/readyz")
MAX_REQUEST_BODY = DEFAULT_MAX_REQUEST_BODY_SIZE
"""4 MiB: a long conversation is far smaller; a bigger body is answered 413 before it is parsed."""
SHUTDOWN_GRACE_S = 25
"""On SIGTERM, calls in flight get this long to finish (below Kubernetes' default 30 s grace)."""
READY_TTL_S = 5.0
"""How long a readiness answer is reused, so a storm of probes costs one upstream round."""
PROBE_TIMEOUT_S = 5.0

_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_WILDCARD_BINDS = ("0.0.0.0", "::")  # noqa: S104 - names to recognise, not to bind


# --- Who may call: the bearer token and the Host/Origin lists --------------------------------------


class StaticTokenVerifier(TokenVerifier):
    """Accepts exactly one token; compares SHA-256 digests in constant time (length included)."""

    def __init__(self, token: SecretStr) -> None:
        self._digest = hashlib.sha256(token.get_secret_value().encode()).digest()

    async def verify_token(self, token: str) -> AccessToken | None:
        offered = hashlib.sha256(token.encode()).digest()
        if hmac.compare_digest(offered, self._digest):
            # `token` stays out of the record: the SDK keeps AccessToken objects on the request.
            return AccessToken(token="[redacted]", client_id="gguf-mcp-client", scopes=[])  # noqa: S106
        return None


def client_auth(settings: Settings) -> tuple[TokenVerifier | None, AuthSettings | None]:
    """The SDK's bearer-token check when a token is set, else nothing."""
    if settings.auth_token is None:
        return None, None
    # issuer_url is required by the model but unused: there is no authorization server, and no
    # resource_server_url (which would publish OAuth metadata clients would then try to follow).
    auth = AuthSettings(issuer_url="http://localhost", resource_server_url=None)  # type: ignore[arg-type]
    return StaticTokenVerifier(settings.auth_token), auth


def _has_port(host: str) -> bool:
    return host.rsplit("]", 1)[-1].count(":") == 1


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """The Host and Origin values to accept: loopback, the bind address, and the configured extras.

    An extra host without a port matches any port (`mcp.example.com` also allows
    `mcp.example.com:8443`); origins match exactly, as browsers send them.
    """
    names = list(_LOOPBACK_NAMES)
    bind = settings.host if settings.host != "::1" else "[::1]"
    if bind not in names and bind not in _WILDCARD_BINDS:
        names.append(f"[{bind}]" if ":" in bind and not bind.startswith("[") else bind)
    hosts = [pattern for name in names for pattern in (name, f"{name}:*")]
    origins = [pattern for name in names for pattern in (f"http://{name}", f"http://{name}:*")]
    for host in settings.allowed_hosts:
        host = host.lower()
        hosts += [host] if _has_port(host) else [host, f"{host}:*"]
    origins += [origin.rstrip("/").lower() for origin in settings.allowed_origins]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(dict.fromkeys(hosts)),
        allowed_origins=list(dict.fromkeys(origins)),
    )


_HOST = re.compile(r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9.-]+))(?::(?P<port>[0-9]{1,5}|\*))?")
_ORIGIN = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>.+)")
_ANY_PORT = "*"

HostKey = tuple[str, str | None]
"""A host name (lowercase; IPv6 in brackets) and its port as written: digits, `*` (patterns only) or None."""


def _host_key(value: str) -> HostKey | None:
    """`value` parsed as a Host header (or a pattern with port `*`), or None when it is not one."""
    match = _HOST.fullmatch(value.lower())
    if match is None or (match["v6"] is not None and _ip_address(match["v6"]) is None):
        return None
    port = match["port"]
    if port is not None and port != _ANY_PORT and not 0 < int(port) <= 65535:
        return None
    return (f"[{match['v6']}]" if match["v6"] is not None else match["name"]), port


def _origin_key(value: str) -> tuple[str, HostKey] | None:
    """`value` parsed as an Origin (`scheme://host[:port]`, nothing else), or None when it is not one."""
    match = _ORIGIN.fullmatch(value.lower())
    host = _host_key(match["host"]) if match is not None else None
    return None if match is None or host is None else (match["scheme"], host)


def _host_allowed(key: HostKey, patterns: set[HostKey]) -> bool:
    """The SDK's rule, on parsed values: the exact host and port, or `name:*` for any port of `name`."""
    name, port = key
    return port != _ANY_PORT and (key in patterns or (port is not None and (name, _ANY_PORT) in patterns))


class HostRules:
    """The Host and Origin lists, parsed once; values are compared parsed and lowercased, never as prefixes."""

    def __init__(self, security: TransportSecuritySettings) -> None:
        self._hosts = {key for key in map(_host_key, security.allowed_hosts) if key is not None}
        origins = [_origin_key(origin) for origin in security.allowed_origins]
        self._origins = {key for key in origins if key is not None}

    def host(self, value: str) -> bool:
        key = _host_key(value)
        return key is not None and _host_allowed(key, self._hosts)

    def origin(self, value: str) -> bool:
        key = _origin_key(value)
        if key is None:
            return False
        scheme, host = key
        return _host_allowed(host, {h for s, h in self._origins if s == scheme})


def _ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_ip_literal(host_header: str) -> bool:
    key = _host_key(host_header)
    return key is not None and key[1] != _ANY_PORT and _ip_address(key[0].strip("[]")) is not None


def _arrived_on_loopback(scope: Scope) -> bool:
    """Whether the connection reached a loopback address (or a Unix socket) of this machine."""
    server = scope.get("server")
    if not server or server[1] is None:
        return True
    address = _ip_address(server[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address is not None and address.is_loopback


def _lowercase_host_and_origin(scope: Scope) -> Scope:
    """The scope with Host and Origin lowercased, as they were matched: the SDK compares them again, by case."""
    names = (b"host", b"origin")
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    if all(value == value.lower() for name, value in headers if name in names):
        return scope
    return {**scope, "headers": [(n, v.lower() if n in names else v) for n, v in headers]}


_CLIENT_GONE = (anyio.ClosedResourceError, anyio.BrokenResourceError)
"""What the SDK (mcp 2.3) raises when a session closes under a request it has already answered.

A client that cancels a call and closes its session at once (llama-index does, per call): the
SDK answers the `notifications/cancelled` POST 202, then hands the message to the session, whose
stream the DELETE has just closed. It logs that ClosedResourceError with a traceback ("Error
handling POST request"), sends a 500 after the 202 (uvicorn: "Unexpected ASGI message
'http.response.start' sent, after response already completed") and raises again ("Exception in
ASGI application"). The client has its answer and is gone: RequestGate drops the second answer
and the exception (one debug line), and `_ClientGoneFilter` the SDK's traceback.
"""


class _ClientGoneFilter(logging.Filter):
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
                await self._app(_lowercase_host_and_origin(scope), receive, send_with_id)
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
        if not (self._rules.host(host) or (path in HEALTH_PATHS and _is_ip_literal(host))):
            log.warning("Refused Host %.100r: add it to GGUF_MCP_ALLOWED_HOSTS if it is yours", host)
            return PlainTextResponse("Invalid Host header", status_code=421)
        if path != MCP_PATH:
            return None
        if scope["method"] == "GET" and not self._has_token:
            return PlainTextResponse("No standalone event stream; POST requests", 405, {"allow": "POST, DELETE"})
        if not self._has_token and not _arrived_on_loopback(scope):
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
        return _unauthorized()


def _unauthorized() -> Response:
    """The SDK's 401 (RFC 6750 challenge and JSON body), saying which header to send."""
    setting = OPTION_BY_DEST["auth_token"].env
    description = f"Send the header Authorization: Bearer <{setting}>, the token this server was given"
    return JSONResponse(
        {"error": "invalid_token", "error_description": description},
        status_code=401,
        headers={"www-authenticate": f'Bearer error="invalid_token", error_description="{description}"'},
    )


# --- Readiness ------------------------------------------------------------------------------------


class Readiness:
    """Whether every deployment answers the shared health check, re-checked at most every `ttl` s.

    A probe must answer quickly and say why: each check waits at most PROBE_TIMEOUT_S, without
    retries, through the server's own upstream client. Concurrent probes share one check.
    """

    def __init__(self, state: AppState, ttl: float = READY_TTL_S) -> None:
        self._state = state
        self._ttl = ttl
        self._lock = anyio.Lock()
        self._states: dict[str, str] = {}
        self._checked_at = -math.inf

    async def states(self) -> dict[str, str]:
        """Deployment name -> "ok" or the failure's short label, in configuration order."""
        async with self._lock:
            if time.monotonic() - self._checked_at >= self._ttl:
                deployments = list(self._state.settings.deployments.values())
                found = await check_all(self._state.upstream, deployments, within=PROBE_TIMEOUT_S, retry=NO_RETRY)
                for health in found:  # log changes only, not every probe
                    name = health.deployment.name
                    if health.label != self._states.get(name, "ok"):
                        if health.ok:
                            log.warning("Deployment %r is ready again", name)
                        else:
                            log.warning("Deployment %r is not ready (%s): %s", name, health.label, health.error)
                self._states = {health.deployment.name: health.label for health in found}
                self._checked_at = time.monotonic()
            return dict(self._states)

    async def endpoint(self, _: Request) -> Response:
        states = await self.states()
        ready = all(state == "ok" for state in states.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "deployments": states},
            status_code=200 if ready else 503,
            headers={"cache-control": "no-store"},
        )


async def healthz(_: Request) -> Response:
    """Liveness only: no upstream call, nothing about the configuration."""
    return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})


# --- Connections: a cap, and a deadline for each request header -----------------------------------


class _Throttled:
    """A warning that an attack would repeat per connection: at most one line per `period` seconds."""

    def __init__(self, period: float = 10.0) -> None:
        self._period = period
        self._last = -math.inf
        self._skipped = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self._period:
            self._skipped += 1
            return
        if self._skipped:
            message += f" (and {self._skipped} more times since the previous line)"
        log.warning(message, *args)
        self._last, self._skipped = now, 0


_cap_reached = _Throttled()
_out_of_descriptors = _Throttled()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with the two guards it lacks against slow or idle clients.

    uvicorn (0.54) closes a kept-alive connection after `timeout_keep_alive` only between requests,
    and stops that timer at the first byte of the next one; a connection that sends nothing, or
    half a request header, is never closed, and 1,100 of them exhaust a 1,024-descriptor process
    before any auth (issue 13 point 10). `limit_concurrency` does not help: it counts those
    connections too and answers 503 to everyone else. So:

    - a deadline: a connection must complete a request header within `header_timeout` seconds of
      connecting or of its previous response (trickling bytes does not extend it), else it is closed;
    - a cap: past `max_connections`, a new connection closes the one that has waited longest for its
      header (an attacker's, since a real client sends its header at once), or, when every
      connection is busy with a request, is closed itself.

    For `gguf-mcp --transport http` `serve_http` passes it; under uvicorn's CLI pass
    `--http gguf_mcp.http:GuardedH11Protocol` (`create_app` sets the limits from the settings).
    """

    max_connections: int = Settings.model_fields["max_connections"].default
    header_timeout: float = Settings.model_fields["header_timeout"].default
    _deadline: asyncio.TimerHandle | None = None
    _waiting_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._await_header()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_header()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _waiting(self) -> bool:
        """No request in progress: connected or answered, and the next header not complete yet."""
        return (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing()

    def _await_header(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._waiting_since = self.loop.time()
        self._deadline = self.loop.call_later(self.header_timeout, self._header_overdue)

    def _header_overdue(self) -> None:
        self._deadline = None
        if self._waiting():
            log.debug("Closed a connection that sent no complete request header in %g s", self.header_timeout)
            self.transport.close()

    def _make_room(self) -> None:
        open_ = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and not c.transport.is_closing()]
        if len(open_) <= self.max_connections:
            return  # the others are closing already
        waiting = [c for c in open_ if c is not self and c._waiting()]
        victim = min(waiting, key=lambda c: c._waiting_since) if waiting else self
        _cap_reached.warning(
            "%d HTTP connections open, past GGUF_MCP_MAX_CONNECTIONS: closed %s",
            len(open_),
            "the one waiting longest for its request header" if waiting else "a new one, all are busy",
        )
        victim.transport.close()


def _quiet_descriptor_exhaustion(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """One warning line, not asyncio's traceback, when accept() finds no free file descriptor.

    asyncio then stops accepting for a second and retries; meanwhile the connection cap closes
    the connections that wait for a header, so the server recovers on its own.
    """
    if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
        _out_of_descriptors.warning(
            "Out of file descriptors accepting connections (%s); pausing 1 s. Keep GGUF_MCP_MAX_CONNECTIONS "
            "well below the open-file limit (ulimit -n).",
            context.get("exception"),
        )
    else:
        loop.default_exception_handler(context)


def guarded_protocol(settings: Settings) -> type[GuardedH11Protocol]:
    """GuardedH11Protocol with these settings' limits (uvicorn takes a class and builds one per connection)."""
    limits = {"max_connections": settings.max_connections, "header_timeout": settings.header_timeout}
    return type("GuardedH11Protocol", (GuardedH11Protocol,), limits)


# --- The app and how it runs ---------------------------------------------------------------------


def build_app(state: AppState) -> ASGIApp:
    """The whole HTTP app over `state` (build one per process)."""
    settings = state.settings
    # sse-starlette ends every open event stream the moment uvicorn is asked to exit, which would
    # cut calls in flight. Ours end with their call (GET streams are refused), so let them finish;
    # uvicorn's graceful-shutdown bound still ends whatever outlives it.
    AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]
    sdk_transport_log = logging.getLogger("mcp.server.streamable_http")
    if not any(isinstance(f, _ClientGoneFilter) for f in sdk_transport_log.filters):
        sdk_transport_log.addFilter(_ClientGoneFilter())
    token_verifier, auth = client_auth(settings)
    server = build_server(state, token_verifier=token_verifier, auth=auth)
    security = transport_security(settings)
    mcp_app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=settings.stateless,
        max_request_body_size=MAX_REQUEST_BODY,
        max_sessions=settings.max_sessions,
        session_idle_timeout=settings.session_idle_timeout,
        transport_security=security,
        host=settings.host,
    )
    readiness = Readiness(state)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        asyncio.get_running_loop().set_exception_handler(_quiet_descriptor_exhaustion)
        async with server.session_manager.run():
            yield

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readiness.endpoint, methods=["GET"]),
        Route(MCP_PATH, mcp_app),  # the SDK's app: auth, sessions, the MCP endpoint
    ]
    return RequestGate(Starlette(routes=routes, lifespan=lifespan), security, token_verifier)


def create_app() -> ASGIApp:
    """App factory for ASGI servers: `uvicorn --factory gguf_mcp.http:create_app --workers 4`.

    Settings come from the environment, exactly as for `gguf-mcp` (the transport is http).
    uvicorn's own flags set the bind address, port and shutdown bound; see README.
    """
    try:
        settings = load_settings({"transport": "http"}, os.environ)
        http, upstream = upstream_client(settings)
    except ConfigError as exc:
        print(report_config_error(exc), file=sys.stderr)
        # uvicorn's "failed to start" code: its supervisor then stops instead of restarting workers.
        raise SystemExit(STARTUP_FAILURE) from None
    configure_logging(settings)
    # uvicorn's CLI builds the protocol from `--http gguf_mcp.http:GuardedH11Protocol`, by name.
    GuardedH11Protocol.max_connections = settings.max_connections
    GuardedH11Protocol.header_timeout = settings.header_timeout
    return _closing(build_app(AppState(settings, upstream)), http)


def _closing(app: ASGIApp, http: httpx2.AsyncClient) -> ASGIApp:
    """`app`, closing the upstream connections when the ASGI server shuts it down."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        async with http:
            await app(scope, receive, send)

    return wrapped


def _announce(message: str, *args: object) -> None:
    """An INFO record that also shows at the default level (warning): a start and a stop are worth one line.

    `Logger.handle` skips the level check but not the handlers' redaction and format; at `error`
    the operator asked for quiet.
    """
    if logging.getLogger().getEffectiveLevel() <= logging.WARNING:
        log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, message, args, None))


class _AnnouncingServer(uvicorn.Server):
    """uvicorn's server, saying where it listens once it does (not before: binding can still fail)."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self._settings = settings
        self.url = ""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}{MCP_PATH}"
            _announce(
                "listening on %s (client token required: %s; deployments: %s)",
                self.url,
                "yes" if self._settings.auth_token is not None else "no",
                ", ".join(self._settings.deployments),
            )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        # Here, not after serve(): uvicorn re-raises the SIGTERM it caught once serve() is done.
        _announce("stopped listening on %s", self.url)


async def serve_http(state: AppState) -> None:
    """`gguf-mcp --transport http`: one process; SIGTERM lets calls finish for up to SHUTDOWN_GRACE_S."""
    settings = state.settings
    config = uvicorn.Config(
        build_app(state),
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep ours (redacting, text or JSON); uvicorn's would bypass it
        log_level=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        http=guarded_protocol(settings),
    )
    await _AnnouncingServer(config, settings).serve()
