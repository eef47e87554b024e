"""Who may call, and what each caller may use: the vocabulary shared by configuration, identity and
fair share.

A `Client` is one `[clients.<name>]` table of the `GGUF_MCP_CONFIG` file (or the single
`GGUF_MCP_AUTH_TOKEN`, as the client named `default`); its `ClientPolicy` says which deployments,
tools and scopes it may use and its limits. `[client_defaults]` is the policy of an OAuth client
that no table names. A `Caller` is who makes one request, once identified. Pure data: parsing lives
in `gguf_mcp.config`, recognising a bearer in `gguf_mcp.identity`, enforcing limits in
`gguf_mcp.fairshare`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

MODELS_SCOPE = "gguf:models"
GENERATE_SCOPE = "gguf:generate"
EMBED_SCOPE = "gguf:embed"
METRICS_SCOPE = "gguf:metrics"
SCOPES = (MODELS_SCOPE, GENERATE_SCOPE, EMBED_SCOPE, METRICS_SCOPE)
"""Every scope gguf-mcp knows; an access token needs at least one of them."""
USE_SCOPES = frozenset((MODELS_SCOPE, GENERATE_SCOPE, EMBED_SCOPE))
"""A named client's scopes unless its table says otherwise: metrics (every client's usage) is opt-in
(`metrics = true`, or `gguf:metrics` listed in `scopes`)."""

TOOL_SCOPES = {
    "list_models": MODELS_SCOPE,
    "chat": GENERATE_SCOPE,
    "messages": GENERATE_SCOPE,
    "complete": GENERATE_SCOPE,
    "embed": EMBED_SCOPE,
}
"""The scope each tool needs (the resources need `gguf:models`, `/metrics` needs `gguf:metrics`)."""

DEFAULT_CLIENT = "default"
"""The client `GGUF_MCP_AUTH_TOKEN` stands for (with every scope, metrics included), and whose limits
apply over stdio."""


def hash_token(token: str) -> str:
    """The hex SHA-256 of a bearer token, as `token_sha256` holds it (lowercase)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class ClientPolicy:
    """What a client may use (None: everything configured) and how much."""

    deployments: frozenset[str] | None = None
    tools: frozenset[str] | None = None
    scopes: frozenset[str] = USE_SCOPES
    max_concurrent: int | None = None
    """Calls in flight at once, queued ones included."""
    max_tokens: int | None = None
    """Cap on one call's max_tokens."""
    over_max_tokens: Literal["lower", "refuse"] = "lower"
    """A call asking for more than `max_tokens`: lowered to it silently, or refused."""
    tokens_per_hour: int | None = None
    tokens_per_day: int | None = None

    def allows_tool(self, tool: str) -> bool:
        scope = TOOL_SCOPES.get(tool)
        return (self.tools is None or tool in self.tools) and (scope is None or scope in self.scopes)

    def allows_deployment(self, deployment: str) -> bool:
        return self.deployments is None or deployment in self.deployments


@dataclass(frozen=True)
class Client:
    """One named client: how it is recognised, and its policy."""

    name: str
    token_sha256: str | None = None
    """Hex SHA-256 of its bearer token (the token itself is never stored)."""
    oauth_client_id: str | None = None
    oauth_subject: str | None = None
    policy: ClientPolicy = field(default_factory=ClientPolicy)


@dataclass(frozen=True)
class Caller:
    """Who makes a request: a client's table name or an OAuth `client_id` (never a token), and its policy."""

    name: str
    policy: ClientPolicy
    configured: bool = True
    """Whether `name` is a configured table (bounded: usable as a metrics label) or an OAuth client_id."""
