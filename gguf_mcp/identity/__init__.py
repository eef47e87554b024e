"""Recognising who calls over HTTP: named clients' tokens and OAuth 2.1 access tokens.

The SDK runs one `TokenVerifier` on every request to `/mcp` (`MCPServer(token_verifier=...)`);
here it is `IdentityVerifier`: a named client's token (`[clients.<name>]`, or GGUF_MCP_AUTH_TOKEN
as the client `default`) is that client; any other bearer goes to the access-token verifier of
the configured authorization server: `JWTVerifier` (RFC 9068, keys from the issuer's metadata)
or `IntrospectionVerifier` (RFC 7662, for opaque tokens). The result carries the request's
`Caller` (`caller_of`). Nothing here knows about deployments or tools: what a caller may use is
its `ClientPolicy`, enforced elsewhere.

- `remote`: fetching the authorization server's documents; outages logged once a minute.
- `keys`: discovery (RFC 8414 / OpenID) and the cached JWKS.
- `claims`: a verified token's claims in the SDK's `AccessToken` shape, whoever issued it.
- `access_tokens`, `introspection`: the two access-token verifiers.
- `directory`: the configured clients, and the verifier the SDK runs.
- `configured`: `identity_for(settings)`, what the composition root builds from the settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gguf_mcp.identity.configured import directory_of, identity_for
from gguf_mcp.identity.directory import ClientDirectory, IdentifiedToken, IdentityVerifier, caller_of
from gguf_mcp.identity.introspection import IntrospectionVerifier
from gguf_mcp.identity.remote import IssuerUnavailable, issuer_outage

if TYPE_CHECKING:
    from gguf_mcp.identity.access_tokens import JWTVerifier


def __getattr__(name: str) -> object:
    # PyJWT costs ~30 ms of start-up: only a server with an issuer configured imports it.
    if name == "JWTVerifier":
        from gguf_mcp.identity.access_tokens import JWTVerifier

        return JWTVerifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ClientDirectory",
    "IdentifiedToken",
    "IdentityVerifier",
    "IntrospectionVerifier",
    "IssuerUnavailable",
    "JWTVerifier",
    "caller_of",
    "directory_of",
    "identity_for",
    "issuer_outage",
]
