"""Who a bearer is: a named client's token, else an access token of the authorization server.

`ClientDirectory` is the configured clients in the shapes a lookup needs, built once per
configuration and never changed: a reload builds a new one and `IdentityVerifier.directory` is
reassigned in one statement. Each request reads the attribute once, so it sees one directory
whole, and the `Caller` it gets (inside `IdentifiedToken`, the SDK's record of the request's
token) stays that request's for its lifetime: swapping the directory revokes a removed client's
next request and leaves every other client's sessions and calls in flight alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from mcp.server.auth.provider import AccessToken, TokenVerifier
from pydantic import ConfigDict, SkipValidation

from gguf_mcp.clients import DEFAULT_CLIENT, SCOPES, Caller, Client, ClientPolicy, hash_token
from gguf_mcp.redaction import MASK

DEFAULT_POLICY = ClientPolicy(scopes=frozenset(SCOPES))
"""The policy of the client `default` should the clients given lack it (the configuration always has it)."""


class IdentifiedToken(AccessToken):
    """The SDK's record of a verified bearer, with who it is (`caller`) as of the request's start.

    `scopes` are the caller's: for an OAuth token, those granted that its policy also allows."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    caller: SkipValidation[Caller]


@dataclass(frozen=True)
class ClientDirectory:
    """The configured clients, indexed for the lookups a request makes (build it with `build`)."""

    clients: Mapping[str, Client]
    defaults: ClientPolicy
    """The policy of an OAuth client that no table names (`[client_defaults]`)."""
    by_digest: Mapping[str, Client]
    by_subject: Mapping[str, Client]
    by_oauth_client: Mapping[str, Client]

    @classmethod
    def build(cls, clients: Mapping[str, Client], defaults: ClientPolicy) -> ClientDirectory:
        """`clients` by table name, `default` (GGUF_MCP_AUTH_TOKEN's) included, as `Settings.clients` has
        them; `defaults` is `Settings.client_defaults`."""
        tables = clients.values()
        return cls(
            dict(clients),
            defaults,
            by_digest={c.token_sha256.lower(): c for c in tables if c.token_sha256},
            by_subject={c.oauth_subject: c for c in tables if c.oauth_subject},
            by_oauth_client={c.oauth_client_id: c for c in tables if c.oauth_client_id},
        )

    def named(self, token: str) -> Client | None:
        # A dict lookup by digest: timing reveals at most which digests exist, nothing of any token.
        return self.by_digest.get(hash_token(token))

    def oauth_caller(self, verified: AccessToken) -> Caller:
        """The table naming the token's user (`oauth_subject`: a person's limits follow them into any
        app), else its client (`oauth_client_id`), else the defaults; its scopes are those the token was
        granted that the policy also allows."""
        table = self.by_subject.get(verified.subject or "") or self.by_oauth_client.get(verified.client_id)
        name, policy = (table.name, table.policy) if table else (verified.client_id, self.defaults)
        return Caller(name, replace(policy, scopes=policy.scopes & frozenset(verified.scopes)), table is not None)

    def default_caller(self) -> Caller:
        """Whoever calls with no bearer at all: over stdio, or over HTTP with no credential configured."""
        default = self.clients.get(DEFAULT_CLIENT)
        return Caller(DEFAULT_CLIENT, default.policy if default else DEFAULT_POLICY)


class IdentityVerifier(TokenVerifier):
    """The SDK's token verifier: named clients first, then access tokens (`access_tokens`, if any)."""

    def __init__(self, directory: ClientDirectory, access_tokens: TokenVerifier | None = None) -> None:
        """`access_tokens`: a `JWTVerifier` or `IntrospectionVerifier` when an authorization server is set."""
        self.directory = directory
        """Reassign to reload (one atomic assignment; see the module docstring)."""
        self.access_tokens = access_tokens

    async def verify_token(self, token: str) -> IdentifiedToken | None:
        directory = self.directory  # read once: the whole request sees one configuration
        client = directory.named(token)
        if client is not None:
            scopes = sorted(client.policy.scopes)
            caller = Caller(client.name, client.policy)
            return IdentifiedToken(token=MASK, client_id=client.name, scopes=scopes, caller=caller)
        if self.access_tokens is None:
            return None
        verified = await self.access_tokens.verify_token(token)
        if verified is None:
            return None
        caller = directory.oauth_caller(verified)
        fields: dict[str, Any] = {**dict(verified), "scopes": sorted(caller.policy.scopes)}
        return IdentifiedToken(**fields, caller=caller)

    async def aclose(self) -> None:
        close = getattr(self.access_tokens, "aclose", None)
        if close is not None:
            await close()


def caller_of(token: AccessToken | None, directory: ClientDirectory) -> Caller:
    """Who makes the current request, from `mcp.server.auth.middleware.auth_context.get_access_token()`.

    No token (stdio, or HTTP without credentials) is the client `default`; a token some other
    verifier produced (not expected) is an unconfigured OAuth client under the defaults.
    """
    if isinstance(token, IdentifiedToken):
        return token.caller
    if token is None:
        return directory.default_caller()
    return Caller(token.client_id, directory.defaults, configured=False)
