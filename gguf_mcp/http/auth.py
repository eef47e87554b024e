"""The clients' credentials at the HTTP edge: what the SDK checks them with, and how refusals explain themselves.

The SDK owns the check (`MCPServer(token_verifier=..., auth=AuthSettings(...))`): its
`AuthenticationMiddleware` asks our `IdentityVerifier` (gguf_mcp.identity: named clients, then
the issuer's access tokens) and puts the verdict in `scope["user"]`, and its
`RequireAuthMiddleware` on `/mcp` answers 401 to a request without a valid one. With
GGUF_MCP_OAUTH_ISSUER set, `AuthSettings.resource_server_url` is GGUF_MCP_PUBLIC_URL: the SDK
publishes the protected resource metadata (RFC 9728; we publish our scopes in it,
`with_scopes_published`) and every 401 names it (`resource_metadata`). Nothing here verifies a
token a second time; `Challenges` words the refusals:
- 401 (the SDK's verdict): a body naming what to send, and `scope` in the challenge (MCP spec);
- 503 with Retry-After, instead of that 401, when the token could not be checked because the
  authorization server could not be asked (`issuer_outage`): the token may be fine;
- 403 `insufficient_scope` for a caller with none of gguf-mcp's scopes (`RequireSomeScope`).
`scope_refusal` gives any other route (`/metrics`) the same answers for one scope.
"""

from __future__ import annotations

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from mcp.server.auth.settings import AuthSettings
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gguf_mcp.clients import DEFAULT_CLIENT, SCOPES, USE_SCOPES
from gguf_mcp.config import OPTION_BY_DEST, Settings
from gguf_mcp.http.hosts import arrived_on_loopback
from gguf_mcp.identity import IdentityVerifier, caller_of, issuer_outage
from gguf_mcp.identity.keys import RETRY_S
from gguf_mcp.logs import client_name

RESOURCE_NAME = "gguf-mcp"
CHALLENGED_SCOPES = " ".join(s for s in SCOPES if s in USE_SCOPES)
"""What a 401 tells an OAuth client to ask for: the tools' scopes (metrics is for operators)."""


def client_auth(settings: Settings, identity: IdentityVerifier) -> tuple[TokenVerifier | None, AuthSettings | None]:
    """The SDK's bearer-token check when the server has credentials, else nothing (both or neither, the SDK's rule)."""
    if not settings.auth_required:
        return None, None
    if settings.oauth_issuer is not None and settings.public_url is not None:
        # Validated from the strings as given: a bare AnyHttpUrl would add a slash to a path-less
        # issuer, and clients compare the issuer the metadata names with the issuer's own, exactly.
        auth = AuthSettings.model_validate(
            {
                "issuer_url": settings.oauth_issuer,
                "resource_server_url": settings.public_url,
                "validate_token_resource": False,  # the audience is the verifier's to check (identity.claims)
            }
        )
    else:
        # issuer_url is required by the model but unused: no authorization server, and no
        # resource_server_url (which would publish OAuth metadata clients would then try to follow).
        auth = AuthSettings.model_validate({"issuer_url": "http://localhost", "resource_server_url": None})
    return identity, auth


def with_scopes_published(app: Starlette, auth: AuthSettings | None) -> None:
    """Replace the SDK's protected resource metadata route by one listing gguf-mcp's scopes.

    The SDK fills `scopes_supported` only from `AuthSettings.required_scopes`, which it also
    demands of every token, all of them: a client needing one would be refused. Its public
    `create_protected_resource_routes` builds the same route with the scopes listed.
    """
    if auth is None or auth.resource_server_url is None:
        return
    (published,) = create_protected_resource_routes(
        resource_url=auth.resource_server_url,
        authorization_servers=[auth.issuer_url],
        scopes_supported=list(SCOPES),
        resource_name=RESOURCE_NAME,
    )
    for index, route in enumerate(app.routes):
        if isinstance(route, Route) and route.path == published.path:
            app.routes[index] = published
            return
    raise TypeError(f"the SDK's app has no route {published.path} to publish the scopes on")


class Challenges:
    """The answers to a request without the credential it needs, as this server's settings word them."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        public = settings.public_url if settings.oauth_issuer is not None else None
        self.metadata_url = str(build_resource_metadata_url(AnyHttpUrl(public))) if public is not None else None

    def _challenge(self, error: str, description: str, scope: str | None) -> str:
        parts = [f'error="{error}"', f'error_description="{description}"']
        if scope is not None:
            parts.append(f'scope="{scope}"')
        if self.metadata_url is not None:
            parts.append(f'resource_metadata="{self.metadata_url}"')
        return "Bearer " + ", ".join(parts)

    def unauthenticated(self) -> Response:
        """401: no valid bearer. The scopes to ask for, when OAuth is on (MCP authorization spec)."""
        scope = CHALLENGED_SCOPES if self.metadata_url is not None else None
        challenge = self._challenge("invalid_token", "Authentication required", scope)
        body = {"error": "invalid_token", "error_description": missing_token_hint(self._settings)}
        return JSONResponse(body, 401, {"www-authenticate": challenge})

    def issuer_unreachable(self, issuer: str) -> Response:
        """503: the token could not be checked; nothing was accepted. Retry once the issuer is asked again."""
        description = (
            f"The authorization server {issuer} could not be asked to check this token (gguf-mcp logs why); "
            f"try again in {RETRY_S:g} s."
        )
        body = {"error": "temporarily_unavailable", "error_description": description}
        return JSONResponse(body, 503, {"retry-after": f"{RETRY_S:g}"})

    def insufficient_scope(self, needed: str, granted: list[str]) -> Response:
        """403 `insufficient_scope`: a valid token, without a scope the request needs."""
        has = " ".join(granted) or "no gguf scope"
        description = f"This request needs {' or '.join(needed.split())}; the token has {has}"
        challenge = self._challenge("insufficient_scope", description, needed)
        body = {"error": "insufficient_scope", "error_description": description}
        return JSONResponse(body, 403, {"www-authenticate": challenge})


def missing_token_hint(settings: Settings) -> str:
    """What a 401's body tells the client to send: each credential this server accepts."""
    accepted = []
    if settings.auth_token is not None:
        accepted.append(f"<{OPTION_BY_DEST['auth_token'].env}>, the token this server was given")
    if any(c.token_sha256 for name, c in settings.clients.items() if name != DEFAULT_CLIENT):
        accepted.append("<your client token> (from `gguf-mcp token new NAME`)")
    if settings.oauth_issuer is not None:
        accepted.append(
            f"<an access token from {settings.oauth_issuer} for {settings.public_url}> (the protected resource "
            "metadata named in WWW-Authenticate says where to sign in)"
        )
    return "Send the header Authorization: Bearer " + "; or Bearer ".join(accepted)


class ExplainedRefusal:
    """The SDK's `RequireAuthMiddleware`, its 401 replaced by `Challenges`' (503 during an issuer outage).

    The SDK decides; this only words the answer. Every other answer passes unchanged.
    """

    def __init__(self, app: ASGIApp, challenges: Challenges) -> None:
        self._app = app
        self._challenges = challenges

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        replacing = False

        async def reworded(message: Message) -> None:
            nonlocal replacing
            if message["type"] == "http.response.start" and message["status"] == 401:
                replacing = True  # the SDK's start and body are dropped; ours is sent whole at its end
                return
            if not replacing:
                await send(message)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                outage = issuer_outage.get()
                answer = self._challenges.issuer_unreachable(outage) if outage else self._challenges.unauthenticated()
                await answer(scope, receive, send)

        await self._app(scope, receive, reworded)


class RequireSomeScope:
    """Behind the SDK's verdict: a caller with none of gguf-mcp's scopes gets 403 `insufficient_scope`
    (the SDK's `required_scopes` would demand all of them). Names the caller in the logs from here on."""

    def __init__(self, app: ASGIApp, challenges: Challenges, identity: IdentityVerifier) -> None:
        self._app = app
        self._challenges = challenges
        self._identity = identity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("user")
        if isinstance(user, AuthenticatedUser):
            if not set(user.scopes) & set(SCOPES):
                refusal = self._challenges.insufficient_scope(" ".join(SCOPES), user.scopes)
                await refusal(scope, receive, send)
                return
            named = client_name.set(caller_of(user.access_token, self._identity.directory).name)
            try:
                await self._app(scope, receive, send)
            finally:
                client_name.reset(named)
            return
        await self._app(scope, receive, send)


def scope_refusal(request: Request, scope: str, settings: Settings) -> Response | None:
    """The answer for a request to a route that needs `scope` (e.g. `/metrics`: gguf:metrics); None: serve it.

    A server with credentials: 401 without a valid bearer (503 when the issuer could not be asked),
    403 `insufficient_scope` for a caller without the scope. A server without any: loopback only.
    The route must be the SDK app's (`MCPServer.custom_route`), whose middleware verifies the bearer.
    """
    challenges = Challenges(settings)
    if not settings.auth_required:
        if arrived_on_loopback(request.scope):
            return None
        return JSONResponse({"error": "forbidden", "error_description": _loopback_only(scope)}, 403)
    user = request.scope.get("user")
    if not isinstance(user, AuthenticatedUser):
        outage = issuer_outage.get()
        return challenges.issuer_unreachable(outage) if outage else challenges.unauthenticated()
    if scope not in user.scopes:
        return challenges.insufficient_scope(scope, user.scopes)
    return None


def _loopback_only(scope: str) -> str:
    return (
        f"This server has no client credentials, so it answers only on loopback; a caller with {scope} needs a "
        "named client or OAuth"
    )
