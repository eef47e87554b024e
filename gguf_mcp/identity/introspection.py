"""Opaque access tokens, asked about at the authorization server (RFC 7662 token introspection).

The token is POSTed to the introspection endpoint with this server's own client credentials
(HTTP Basic, RFC 6749 section 2.3.1). An answer is accepted when it is `active`, says it is an
access token (a refresh token presented as a bearer is refused), names this server in `aud`
(required: without it a token meant for any other API of the same issuer would pass), and, when
it names one, the configured issuer. A positive answer is kept for `CACHE_S` at most (never past
the token's `exp`), so an agent's burst of requests costs one round trip, and a token revoked at
the authorization server stops working within `CACHE_S`. Refusals are not kept: a flood of bad
tokens costs one introspection each, which the authorization server's own limits govern.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Collection, Mapping
from typing import Any

import httpx2
from mcp.server.auth.provider import AccessToken, TokenVerifier
from pydantic import SecretStr

from gguf_mcp.identity.claims import (
    TokenRefused,
    access_token,
    matched_audience,
    refuse_expired,
    refuse_other_issuer,
    refuse_sender_constrained,
    refused,
    shown,
)
from gguf_mcp.identity.remote import Clock, IssuerHTTP, IssuerUnavailable, OutageLog, fetch_json, issuer_outage

CACHE_S = 60.0
"""How long a positive answer is reused (bounded by the token's exp)."""
CACHE_ENTRIES = 4096


class IntrospectionVerifier(TokenVerifier):
    """Verifies opaque access tokens at an RFC 7662 introspection endpoint."""

    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: SecretStr,
        audiences: str | Collection[str],
        *,
        issuer: str | None = None,
        http: httpx2.AsyncClient | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        """`url`: the introspection endpoint (GGUF_MCP_OAUTH_INTROSPECTION_URL); `client_id` and
        `client_secret`: this server's credentials there. `audiences`: as for `JWTVerifier`.
        `issuer`: when set, an answer naming another `iss` is refused."""
        self.url = url
        self.issuer = issuer
        self.audiences = frozenset([audiences] if isinstance(audiences, str) else audiences)
        self._credentials = (client_id, client_secret)
        self._http = IssuerHTTP(http)
        self._clock = clock
        self._outage = OutageLog(url, clock)
        self._cache: OrderedDict[bytes, tuple[float, AccessToken]] = OrderedDict()

    async def verify_token(self, token: str) -> AccessToken | None:
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        self._cache.pop(digest, None)
        try:
            answer = await self._introspect(token)
            # RFC 7662 makes `iss` optional; the endpoint configured is its issuer's, and an OAuth
            # principal always names an issuer (the SDK binds sessions to client, issuer, subject).
            claims = {**answer, "iss": answer.get("iss") or self.issuer or self.url}
            verified = access_token(claims, self._check(answer))
        except TokenRefused as why:
            refused(why)
            return None
        except IssuerUnavailable as error:
            self._outage.failed(error, "refusing opaque access tokens")
            issuer_outage.set(self.url)
            return None
        self._outage.answered()
        self._remember(digest, verified)
        return verified

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _introspect(self, token: str) -> Mapping[str, Any]:
        client_id, secret = self._credentials
        status, answer = await fetch_json(
            self._http.client,
            self.url,
            form={"token": token, "token_type_hint": "access_token"},
            auth=(client_id, secret.get_secret_value()),
        )
        if status in (401, 403):
            raise IssuerUnavailable(
                f"{self.url} refused gguf-mcp's own client credentials (HTTP {status}): check the introspection "
                f"client id {client_id!r} and its secret"
            )
        if not isinstance(answer, dict):
            raise IssuerUnavailable(f"{self.url} answered HTTP {status} without an introspection response")
        return answer

    def _check(self, answer: Mapping[str, Any]) -> str:
        """The audience that matched, once every rule in the module docstring holds."""
        if answer.get("active") is not True:
            raise TokenRefused("the authorization server says it is not active (unknown, expired or revoked)")
        kind = answer.get("token_type")
        if kind is not None and str(kind).lower() not in ("bearer", "access_token"):
            raise TokenRefused(f"it is a {shown(kind)} token, not a bearer access token")
        if self.issuer is not None and "iss" in answer:
            refuse_other_issuer(answer["iss"], self.issuer)
        refuse_expired(answer)
        refuse_sender_constrained(answer)
        return matched_audience(answer, self.audiences)

    def _remember(self, digest: bytes, verified: AccessToken) -> None:
        lifetime = CACHE_S
        if verified.expires_at is not None:
            lifetime = min(lifetime, verified.expires_at - time.time())
        if lifetime <= 0:
            return
        self._cache[digest] = (self._clock() + lifetime, verified)
        self._cache.move_to_end(digest)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
