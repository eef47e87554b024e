"""JWT access tokens (RFC 9068), checked with the issuer's own keys: the SDK's `TokenVerifier`.

PyJWT (with `cryptography`) does the cryptography; this module decides what is acceptable:
- the algorithm comes from an allow-list of asymmetric ones (`keys.ALGORITHMS`), checked on the
  header before any key is looked up; PyJWT checks that it fits the key (type, curve, `alg`);
- `iss` is exactly the issuer; `aud` (a string or a list) holds one of this server's audiences;
- `exp` is required and has no leeway (the SDK refuses a token once `expires_at` has passed, with
  none either: one rule); `nbf` and `iat` may lie up to `LEEWAY_S` ahead of this host's clock, so
  a fresh token from an issuer whose clock runs ahead is not refused;
- `typ`, when present, must be `at+jwt` (RFC 9068) or plain `JWT`. RFC 9068 asks for `at+jwt`,
  but Microsoft Entra, Keycloak and Okta write `JWT`; the confusion `typ` guards against (an ID
  token or another JWT of the issuer replayed as an access token) is stopped by `aud` as well,
  since those carry the client's id as audience, not this server's URL. Any other declared type
  (`dpop+jwt`, `logout+jwt`, ...) is refused;
- a token bound to a key (`cnf`: DPoP, mTLS) is refused: its binding is not checked here.
"""

from __future__ import annotations

import time
from collections.abc import Collection

import httpx2
import jwt
from mcp.server.auth.provider import AccessToken, TokenVerifier

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
from gguf_mcp.identity.keys import ALGORITHMS, SigningKeys, UnknownKey
from gguf_mcp.identity.remote import Clock, IssuerHTTP, IssuerUnavailable, issuer_outage

LEEWAY_S = 60
"""How far `nbf` and `iat` may lie in this host's future (clock skew with the issuer)."""
ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt", "jwt"})

_REASONS: dict[type[jwt.PyJWTError], str] = {
    jwt.InvalidSignatureError: "its signature does not verify",
    jwt.InvalidAlgorithmError: "its algorithm is not the one its key is published for",
    jwt.ImmatureSignatureError: f"it is not yet valid (nbf or iat more than {LEEWAY_S} s ahead)",
    jwt.MissingRequiredClaimError: "it lacks a required claim",
}


def header_of(token: str) -> tuple[str, str | None]:
    """The token's algorithm (one of the allow-list) and `kid`, once its header passes the checks."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenRefused("it is not a JWT") from None
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise TokenRefused(f"its algorithm {shown(algorithm)} is not one of {', '.join(sorted(ALGORITHMS))}")
    declared = str(header.get("typ", "at+jwt"))
    if declared.lower() not in ACCEPTED_TYPES:
        raise TokenRefused(f"its type {shown(declared)} is not an access token's (at+jwt)")
    kid = header.get("kid")
    return algorithm, kid if isinstance(kid, str) else None


class JWTVerifier(TokenVerifier):
    """Verifies RFC 9068 JWT access tokens of one issuer for this server's audience(s)."""

    def __init__(
        self,
        issuer: str,
        audiences: str | Collection[str],
        *,
        http: httpx2.AsyncClient | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        """`issuer`: exactly as the authorization server spells it (GGUF_MCP_OAUTH_ISSUER).
        `audiences`: the `aud` values meant for this server, usually just its public URL (GGUF_MCP_PUBLIC_URL).
        `http`: a client to fetch metadata and keys with (its owner closes it), else one is opened on first use.
        `clock`: monotonic seconds, for the key cache and the outage log."""
        self.issuer = issuer
        self.audiences = frozenset([audiences] if isinstance(audiences, str) else audiences)
        self._http = IssuerHTTP(http)
        self.keys = SigningKeys(issuer, self._http, clock=clock)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            claims, audience = await self._verified_claims(token)
            return access_token(claims, audience)
        except TokenRefused as why:
            refused(why)
        except IssuerUnavailable:
            issuer_outage.set(self.issuer)  # already logged, once a minute, by the key cache
        return None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _verified_claims(self, token: str) -> tuple[dict[str, object], str]:
        algorithm, kid = header_of(token)
        try:
            key = await self.keys.key_for(kid, algorithm)
        except UnknownKey as unknown:
            raise TokenRefused(str(unknown)) from None
        claims = self._decode(token, key, algorithm)
        refuse_other_issuer(claims["iss"], self.issuer)
        refuse_expired(claims)
        refuse_sender_constrained(claims)
        return claims, matched_audience(claims, self.audiences)

    def _decode(self, token: str, key: jwt.PyJWK, algorithm: str) -> dict[str, object]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                leeway=LEEWAY_S,
                # iss, aud and exp are checked after, where the refusal can say what the token holds.
                options={"require": ["exp", "iss", "aud"], "verify_exp": False, "verify_aud": False},
            )
        except jwt.PyJWTError as error:
            reason = next((text for kind, text in _REASONS.items() if isinstance(error, kind)), None)
            raise TokenRefused(reason or f"it does not decode ({type(error).__name__})") from None
