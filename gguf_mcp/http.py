"""Streamable HTTP: every piece of HTTP wiring lives here.

One ASGI app (`build_app`) serves MCP at `/mcp`, liveness at `/healthz` and readiness at
`/readyz`. `serve_http` runs it under uvicorn for `gguf-mcp --transport http`; `create_app` is
the same app as a factory for several worker processes (`uvicorn --factory
gguf_mcp.http:create_app --workers N`), with settings read from the environment.

What every request goes through, outermost first (`RequestGate`):
- a request id, for the logs and the `X-Request-Id` response header;
- Origin (a foreign one: 403) and Host (a foreign one: 421), whatever the bind address;
  the health endpoints also accept a bare IP address as Host, which is what orchestrators'
  probes send and what DNS rebinding never produces;
- on `/mcp`: GET is refused (405: no standalone event stream, so nothing outlives its call and
  a shutdown never waits on idle streams), and a request that reached a non-loopback address of
  a server without a token is refused (the bind is wider than the settings admit);
- then the SDK: the bearer token (401 with `WWW-Authenticate`), the body size limit (413), and
  its own Host/Origin check with the same lists.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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

from gguf_mcp.config import LOOPBACK_HOSTS, Settings, load_settings
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


def _allowed(value: str, patterns: list[str]) -> bool:
    """The SDK's matching rule: exact, or `name:*` for any port of `name`."""
    return value in patterns or any(p.endswith(":*") and value.startswith(p[:-1]) for p in patterns)


def _ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_ip_literal(host_header: str) -> bool:
    host = host_header[1:].split("]", 1)[0] if host_header.startswith("[") else host_header.rsplit(":", 1)[0]
    return _ip_address(host) is not None


def _arrived_on_loopback(scope: Scope) -> bool:
    """Whether the connection reached a loopback address (or a Unix socket) of this machine."""
    server = scope.get("server")
    if not server or server[1] is None:
        return True
    address = _ip_address(server[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address is not None and address.is_loopback


class RequestGate:
    """The checks every HTTP request passes before any endpoint sees it (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings, security: TransportSecuritySettings) -> None:
        self._app = app
        self._hosts = security.allowed_hosts
        self._origins = security.allowed_origins
        self._has_token = settings.auth_token is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        rid = secrets.token_hex(8)
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            refusal = self._refusal(scope)
            await (refusal or self._app)(scope, receive, send_with_id)
        finally:
            request_id.reset(token)

    def _refusal(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        path: str = scope["path"]
        origin = headers.get("origin")
        if origin is not None and not _allowed(origin, self._origins):
            log.warning("Refused Origin %.100r: add it to GGUF_MCP_ALLOWED_ORIGINS if it is yours", origin)
            return PlainTextResponse("Invalid Origin header", status_code=403)
        host = headers.get("host", "")
        if not (_allowed(host, self._hosts) or (path in HEALTH_PATHS and _is_ip_literal(host))):
            log.warning("Refused Host %.100r: add it to GGUF_MCP_ALLOWED_HOSTS if it is yours", host)
            return PlainTextResponse("Invalid Host header", status_code=421)
        if path != MCP_PATH:
            return None
        if scope["method"] == "GET":
            return PlainTextResponse("No standalone event stream; POST requests", 405, {"allow": "POST, DELETE"})
        if not self._has_token and not _arrived_on_loopback(scope):
            log.error(
                "Refused a request that reached %s, a non-loopback address, with no client token set: set "
                "GGUF_MCP_AUTH_TOKEN, or bind 127.0.0.1",
                scope["server"][0],
            )
            return PlainTextResponse("This server is reachable beyond loopback without a token", 403)
        return None


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


# --- The app and how it runs ---------------------------------------------------------------------


def build_app(state: AppState) -> ASGIApp:
    """The whole HTTP app over `state` (build one per process)."""
    settings = state.settings
    # sse-starlette ends every open event stream the moment uvicorn is asked to exit, which would
    # cut calls in flight. Ours end with their call (GET streams are refused), so let them finish;
    # uvicorn's graceful-shutdown bound still ends whatever outlives it.
    AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]
    token_verifier, auth = client_auth(settings)
    server = build_server(state, token_verifier=token_verifier, auth=auth)
    security = transport_security(settings)
    mcp_app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=settings.stateless,
        max_request_body_size=MAX_REQUEST_BODY,
        transport_security=security,
        host=settings.host,
    )
    readiness = Readiness(state)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with server.session_manager.run():
            yield

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readiness.endpoint, methods=["GET"]),
        Route(MCP_PATH, mcp_app),  # the SDK's app: auth, sessions, the MCP endpoint
    ]
    return RequestGate(Starlette(routes=routes, lifespan=lifespan), settings, security)


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
    )
    if settings.host not in LOOPBACK_HOSTS:
        log.info("Serving beyond loopback at %s:%d; clients need the bearer token", settings.host, settings.port)
    await uvicorn.Server(config).serve()
