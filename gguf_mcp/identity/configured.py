"""The identity checks a configuration asks for, built once per process by the composition root.

`identity_for(settings)`: the named clients (GGUF_MCP_AUTH_TOKEN's `default` included), and over
HTTP with GGUF_MCP_OAUTH_ISSUER set, the access-token verifier of that issuer: introspection when
GGUF_MCP_OAUTH_INTROSPECTION_URL is set, else JWT. `audiences_of(url)`: the `aud` values that name
this server.
"""

from __future__ import annotations

from mcp.server.auth.provider import TokenVerifier

from gguf_mcp.config import Settings
from gguf_mcp.identity.directory import ClientDirectory, IdentityVerifier
from gguf_mcp.identity.introspection import IntrospectionVerifier


def directory_of(settings: Settings) -> ClientDirectory:
    """The clients `settings` configures, as a request looks them up."""
    return ClientDirectory.build(settings.clients, settings.client_defaults)


def identity_for(settings: Settings) -> IdentityVerifier:
    """Who may call this server: the SDK's token verifier over HTTP, the directory's `default` over stdio."""
    return IdentityVerifier(directory_of(settings), access_tokens_of(settings))


def audiences_of(public_url: str) -> frozenset[str]:
    """`public_url` with and without a trailing slash: RFC 8707 names one resource either way, and
    clients send what the protected resource metadata says (with or without one)."""
    bare = public_url.rstrip("/")
    return frozenset({public_url, bare, bare + "/"})


def access_tokens_of(settings: Settings) -> TokenVerifier | None:
    """The verifier of GGUF_MCP_OAUTH_ISSUER's access tokens, for a server that serves HTTP with one set."""
    issuer, public_url = settings.oauth_issuer, settings.public_url
    if settings.transport != "http" or issuer is None or public_url is None:
        return None
    audiences = audiences_of(public_url)
    url, client_id, secret = (
        settings.oauth_introspection_url,
        settings.introspection_client_id,
        settings.introspection_client_secret,
    )
    if url is not None and client_id is not None and secret is not None:
        return IntrospectionVerifier(url, client_id, secret, audiences, issuer=issuer)
    # PyJWT costs ~30 ms of start-up: imported only by a server that verifies JWTs.
    from gguf_mcp.identity.access_tokens import JWTVerifier

    return JWTVerifier(issuer, audiences)
