"""What a verified access token says, in the SDK's `AccessToken` shape, whoever issued it.

Identity providers spell the same facts differently: the client is `client_id` (RFC 9068 and
RFC 7662), `azp` (Auth0, Keycloak, Microsoft Entra v2), `cid` (Okta) or `appid` (Entra v1); the
scopes are `scope` (a space-separated string) or `scp` (Okta: a list; Entra: a string). JWT
verification and introspection both end here, so both read them alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from typing import Any

from mcp.server.auth.provider import AccessToken

from gguf_mcp.bodies import cut, plain
from gguf_mcp.redaction import MASK

log = logging.getLogger("gguf_mcp.identity")

CLIENT_ID_CLAIMS = ("client_id", "azp", "cid", "appid")
SCOPE_CLAIMS = ("scope", "scp")


class TokenRefused(Exception):
    """A token that is not valid here; the message says why (it never quotes the token)."""


def refused(why: TokenRefused) -> None:
    """Log why a token was refused (info: a client misconfiguration shows up here, a flood does not warn)."""
    log.info("Access token refused: %s", why)


def shown(value: object) -> str:
    """A claim's value fit for a log line: escapes and control characters removed, at most 200 characters."""
    return cut(plain(repr(value)), 200)


def client_of(claims: Mapping[str, Any]) -> str:
    for name in CLIENT_ID_CLAIMS:
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    raise TokenRefused(f"the token names no client (none of {', '.join(CLIENT_ID_CLAIMS)})")


def scopes_of(claims: Mapping[str, Any]) -> list[str]:
    for name in SCOPE_CLAIMS:
        value = claims.get(name)
        if isinstance(value, str):
            return value.split()
        if isinstance(value, list):
            return [scope for scope in value if isinstance(scope, str)]
    return []


def matched_audience(claims: Mapping[str, Any], audiences: Collection[str]) -> str:
    """The first of the token's `aud` values that is this server (exact strings, RFC 7519 section 4.1.3)."""
    aud = claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    for value in values:
        if value in audiences:
            return str(value)
    raise TokenRefused(f"its audience {shown(aud)} is not this server ({', '.join(sorted(audiences))})")


def refuse_sender_constrained(claims: Mapping[str, Any]) -> None:
    """A DPoP- or mTLS-bound token (`cnf`) is only valid with a proof this server does not check."""
    if "cnf" in claims:
        raise TokenRefused("it is bound to a key (cnf: DPoP or mTLS), a proof gguf-mcp does not check")


def refuse_other_issuer(iss: object, issuer: str) -> None:
    if iss != issuer:
        raise TokenRefused(f"it was issued by {shown(iss)}, not {issuer}")


def refuse_expired(claims: Mapping[str, Any]) -> None:
    """No leeway: the SDK refuses a token once `expires_at` has passed, with none either (one rule)."""
    expires = timestamp(claims, "exp")
    if expires is not None and expires < time.time():
        raise TokenRefused("it has expired")


def timestamp(claims: Mapping[str, Any], name: str) -> int | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenRefused(f"its {name} claim is not a number")
    return int(value)


def access_token(claims: Mapping[str, Any], audience: str) -> AccessToken:
    """The SDK's record of a verified token; `token` is a mask, as the SDK keeps the record on the request."""
    subject = claims.get("sub")
    return AccessToken(
        token=MASK,
        client_id=client_of(claims),
        scopes=scopes_of(claims),
        expires_at=timestamp(claims, "exp"),
        resource=audience,
        subject=subject if isinstance(subject, str) else None,
        claims=dict(claims),
    )
