"""The HTTP app and how it runs: `build_app`, `serve_http` (the CLI) and `create_app` (uvicorn's factory)."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable

import anyio
import uvicorn
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from sse_starlette.sse import AppStatus
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import STARTUP_FAILURE

from gguf_mcp.config import Settings, load_settings
from gguf_mcp.errors import ConfigError, report_config_error
from gguf_mcp.http.auth import Challenges, client_auth, with_scopes_published
from gguf_mcp.http.connections import GuardedH11Protocol, guarding_connections
from gguf_mcp.http.gate import MCP_PATH, ClientGoneFilter, RequestIds, Verdict, guard_routes
from gguf_mcp.http.hosts import SDK_HOST_CHECK_OFF, HostRules
from gguf_mcp.http.metrics import METRICS_PATH, metrics_endpoint
from gguf_mcp.http.readiness import Readiness, healthz
from gguf_mcp.http.reloading import hangups_ignored, reload_on_sighup
from gguf_mcp.httpclient import Pool
from gguf_mcp.logs import announce, configure_logging
from gguf_mcp.server import build_server
from gguf_mcp.state import AppState, open_state

log = logging.getLogger(__name__)

MAX_REQUEST_BODY = DEFAULT_MAX_REQUEST_BODY_SIZE
"""4 MiB: a long conversation is far smaller; a bigger body is answered 413 before it is parsed."""
SHUTDOWN_GRACE_S = 25
"""On SIGTERM, calls in flight get this long to finish (below Kubernetes' default 30 s grace)."""

Endpoint = Callable[[Request], Awaitable[Response]]


def build_app(state: AppState) -> ASGIApp:
    """The whole HTTP app over `state` (build one per process).

    One app, the SDK's: its `/mcp` (and, with OAuth settings, its protected resource metadata),
    plus the routes in `_probes`, each with its checks attached (gate.py). Its lifespan reloads the
    clients on SIGHUP and closes the identity checks' HTTP client at the end.
    """
    settings, identity = state.settings, state.identity
    # sse-starlette ends every open event stream the moment uvicorn is asked to exit, which would
    # cut calls in flight. Ours end with their call (GET streams are refused), so let them finish;
    # uvicorn's graceful-shutdown bound still ends whatever outlives it.
    AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]
    sdk_transport_log = logging.getLogger("mcp.server.streamable_http")
    if not any(isinstance(f, ClientGoneFilter) for f in sdk_transport_log.filters):
        sdk_transport_log.addFilter(ClientGoneFilter())
    token_verifier, auth = client_auth(settings, identity)
    server = build_server(state, token_verifier=token_verifier, auth=auth)
    probes = _probes(state)
    for path, endpoint in probes.items():
        # The SDK's public way to add a route to its app; its bearer middleware runs app-wide, so
        # such a route can read the SDK's verdict (`request.user`) but is not refused by it.
        server.custom_route(path, methods=["GET"])(endpoint)
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=settings.stateless,
        max_request_body_size=MAX_REQUEST_BODY,
        max_sessions=settings.max_sessions,
        session_idle_timeout=settings.session_idle_timeout,
        transport_security=SDK_HOST_CHECK_OFF,
        host=settings.host,
    )
    with_scopes_published(app, auth)
    methods = ("POST",) if settings.stateless else ("POST", "DELETE")
    guard_routes(app, HostRules(settings), probes, methods, Verdict(Challenges(settings), identity))
    return RequestIds(guarding_connections(_reloading(app, state), settings))


def _reloading(app: ASGIApp, state: AppState) -> ASGIApp:
    """`app`, reloading the clients on SIGHUP while it runs and closing the identity checks' HTTP client after."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(reload_on_sighup, state)
                try:
                    await app(scope, receive, send)
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            await state.identity.aclose()

    return wrapped


def _probes(state: AppState) -> dict[str, Endpoint]:
    """Routes for probes and scrapers: no client token, and a bare IP address is a valid Host."""
    return {"/healthz": healthz, "/readyz": Readiness(state).endpoint, METRICS_PATH: metrics_endpoint(state)}


def create_app() -> ASGIApp:
    """App factory for ASGI servers: `uvicorn --factory gguf_mcp.http:create_app --workers 4`.

    Settings come from the environment, exactly as for `gguf-mcp` (the transport is http).
    uvicorn's own flags set the bind address, port and shutdown bound; see README.
    """
    hangups_ignored()
    try:
        settings = load_settings({"transport": "http"}, os.environ)
        http, state = open_state(settings, metrics=True)
    except ConfigError as exc:
        print(report_config_error(exc), file=sys.stderr)
        # uvicorn's "failed to start" code: its supervisor then stops instead of restarting workers.
        raise SystemExit(STARTUP_FAILURE) from None
    configure_logging(settings)
    return _closing(build_app(state), http, state)


def _closing(app: ASGIApp, http: Pool, state: AppState) -> ASGIApp:
    """`app`, closing the upstream connections and the fair share when the ASGI server shuts it down."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        try:
            async with http:
                await app(scope, receive, send)
        finally:
            state.fairshare.close()

    return wrapped


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
            announce(
                log,
                "listening on %s (client token required: %s; deployments: %s)",
                self.url,
                "yes" if self._settings.auth_required else "no",
                ", ".join(self._settings.deployments),
            )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        # Here, not after serve(): uvicorn re-raises the SIGTERM it caught once serve() is done.
        announce(log, "stopped listening on %s", self.url)


async def serve_http(state: AppState) -> None:
    """`gguf-mcp --transport http`: one process; SIGTERM lets calls finish for up to SHUTDOWN_GRACE_S."""
    settings = state.settings
    hangups_ignored()
    config = uvicorn.Config(
        build_app(state),
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep ours (redacting, text or JSON); uvicorn's would bypass it
        log_level=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        http=GuardedH11Protocol,  # its limits come from build_app (connections.py)
    )
    await _AnnouncingServer(config, settings).serve()
