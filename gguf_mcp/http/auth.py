"""The clients' credential: what the SDK checks it with, and how its refusal explains itself.

The SDK owns the check (`MCPServer(token_verifier=..., auth=AuthSettings(...))`): its
`AuthenticationMiddleware` asks the verifier and puts the verdict in `scope["user"]`, and its
`RequireAuthMiddleware` on `/mcp` answers 401 (with `WWW-Authenticate`, and `resource_metadata`
when `AuthSettings.resource_server_url` is set) to a request without a valid one. Nothing here
verifies a token a second time; `NamingTheHeader` only rewords that 401's body.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gguf_mcp.config import OPTION_BY_DEST, Settings


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
    """The SDK's bearer-token check when a token is set, else nothing (both or neither, the SDK's rule)."""
    if settings.auth_token is None:
        return None, None
    # issuer_url is required by the model but unused: there is no authorization server, and no
    # resource_server_url (which would publish OAuth metadata clients would then try to follow).
    auth = AuthSettings(issuer_url="http://localhost", resource_server_url=None)  # type: ignore[arg-type]
    return StaticTokenVerifier(settings.auth_token), auth


def missing_token_hint() -> str:
    """What a 401's body tells the client to do."""
    setting = OPTION_BY_DEST["auth_token"].env
    return f"Send the header Authorization: Bearer <{setting}>, the token this server was given"


class NamingTheHeader:
    """The SDK's 401, its JSON body's `error_description` replaced by `hint`.

    Status, `WWW-Authenticate` (with any `resource_metadata`) and every other answer pass unchanged.
    """

    def __init__(self, app: ASGIApp, hint: str) -> None:
        self._app = app
        self._hint = hint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal: Message | None = None

        async def reworded(message: Message) -> None:
            nonlocal refusal
            if message["type"] == "http.response.start" and message["status"] == 401:
                refusal = message  # held until its body, whose length changes
                return
            if refusal is not None and message["type"] == "http.response.body" and not message.get("more_body"):
                body = _with_description(message.get("body", b""), self._hint)
                headers = [(k, v) for k, v in refusal.get("headers", ()) if k.lower() != b"content-length"]
                await send({**refusal, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                message = {**message, "body": body}
            elif refusal is not None:
                await send(refusal)
            refusal = None
            await send(message)

        await self._app(scope, receive, reworded)


def _with_description(body: bytes, description: str) -> bytes:
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    if not isinstance(payload, dict):
        return body
    return json.dumps({**payload, "error_description": description}).encode()
