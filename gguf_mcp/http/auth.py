"""The clients' bearer token: the verifier the SDK runs, and how a refusal explains itself."""

from __future__ import annotations

import hashlib
import hmac

from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from pydantic import SecretStr
from starlette.responses import JSONResponse, Response

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
    """The SDK's bearer-token check when a token is set, else nothing."""
    if settings.auth_token is None:
        return None, None
    # issuer_url is required by the model but unused: there is no authorization server, and no
    # resource_server_url (which would publish OAuth metadata clients would then try to follow).
    auth = AuthSettings(issuer_url="http://localhost", resource_server_url=None)  # type: ignore[arg-type]
    return StaticTokenVerifier(settings.auth_token), auth


def unauthorized() -> Response:
    """The SDK's 401 (RFC 6750 challenge and JSON body), saying which header to send."""
    setting = OPTION_BY_DEST["auth_token"].env
    description = f"Send the header Authorization: Bearer <{setting}>, the token this server was given"
    return JSONResponse(
        {"error": "invalid_token", "error_description": description},
        status_code=401,
        headers={"www-authenticate": f'Bearer error="invalid_token", error_description="{description}"'},
    )
