"""The clients: `[clients.<name>]` tables, GGUF_MCP_AUTH_TOKEN as the client `default`, and
`[client_defaults]` for OAuth clients no table names.

Every name a policy lists must be configured (a deployment, a tool this server exposes, a scope),
and every credential must recognise one client only.
"""

from __future__ import annotations

from collections.abc import Iterable

from gguf_mcp.clients import DEFAULT_CLIENT, METRICS_SCOPE, SCOPES, USE_SCOPES, Client, ClientPolicy, hash_token
from gguf_mcp.config.files import TABLE_NAME, ClientTable, ConfigFile, PolicyTable
from gguf_mcp.config.settings import OPTION_BY_DEST, Settings
from gguf_mcp.errors import ConfigError

_IDENTITIES = ("token_sha256", "oauth_client_id", "oauth_subject")
"""How a client table says who it is: exactly one of these (none for `default`: GGUF_MCP_AUTH_TOKEN)."""
_CONFIG = OPTION_BY_DEST["config"].setting


def build_clients(s: Settings, file: ConfigFile) -> tuple[dict[str, Client], ClientPolicy]:
    """Every client by name (`default` first, always there), and the policy of unnamed OAuth clients."""
    named = {name: table for name, table in file.clients.items() if name != DEFAULT_CLIENT}
    clients = {DEFAULT_CLIENT: _default_client(s, file.clients.get(DEFAULT_CLIENT))}
    clients |= {name: _named_client(s, name, table) for name, table in named.items()}
    for identity in _IDENTITIES:
        _one_client_each(clients.values(), identity)
    return clients, _policy(s, file.client_defaults, "[client_defaults]", USE_SCOPES)


def _where(place: str) -> str:
    return f"{_CONFIG}: {place}"


def _default_client(s: Settings, table: ClientTable | None) -> Client:
    """GGUF_MCP_AUTH_TOKEN's client, with every scope; its table, if any, may only narrow or limit it."""
    place = f"[clients.{DEFAULT_CLIENT}]"
    table = table or ClientTable()
    if any(getattr(table, key) is not None for key in _IDENTITIES):
        raise ConfigError(
            f"{_where(place)} is the client of {OPTION_BY_DEST['auth_token'].env}: it takes limits, scopes, "
            "deployments and tools, not token_sha256, oauth_client_id or oauth_subject; give another client "
            "another name."
        )
    digest = hash_token(s.auth_token.get_secret_value()) if s.auth_token is not None else None
    return Client(name=DEFAULT_CLIENT, token_sha256=digest, policy=_policy(s, table, place, frozenset(SCOPES)))


def _named_client(s: Settings, name: str, table: ClientTable) -> Client:
    place = f"[clients.{name}]"
    if not TABLE_NAME.match(name):
        raise ConfigError(f"{_where(place)}: the name must be letters, digits, '-', '_' or '.' (at most 64).")
    _check_identity(s, name, [key for key in _IDENTITIES if getattr(table, key) is not None])
    return Client(
        name=name,
        token_sha256=table.token_sha256,
        oauth_client_id=table.oauth_client_id,
        oauth_subject=table.oauth_subject,
        policy=_policy(s, table, place, USE_SCOPES),
    )


def _check_identity(s: Settings, name: str, given: list[str]) -> None:
    if len(given) != 1:
        raise ConfigError(
            f"{_where(f'[clients.{name}]')}: set exactly one of token_sha256 (a token of its own: `gguf-mcp token "
            f"new {name}`), oauth_client_id or oauth_subject (an OAuth client's limits)."
        )
    if given[0] != "token_sha256" and s.oauth_issuer is None:
        raise ConfigError(
            f"{_where(f'[clients.{name}]')}: {given[0]} names an OAuth client, and "
            f"{OPTION_BY_DEST['oauth_issuer'].setting} is not set; set it (and GGUF_MCP_PUBLIC_URL), or give the "
            "client a token_sha256."
        )


def _policy(s: Settings, table: PolicyTable, place: str, scopes: frozenset[str]) -> ClientPolicy:
    served = f"a tool this server serves ({OPTION_BY_DEST['tools'].env})"
    listed = _subset(table.scopes, SCOPES, f"{place} scopes", "a scope")
    scopes = listed if listed is not None else scopes
    return ClientPolicy(
        deployments=_subset(table.deployments, tuple(s.deployments), f"{place} deployments", "a deployment"),
        tools=_subset(table.tools, s.tools, f"{place} tools", served),
        scopes=scopes | {METRICS_SCOPE} if table.metrics else scopes,
        max_concurrent=table.max_concurrent,
        max_tokens=table.max_tokens,
        over_max_tokens=table.over_max_tokens,
        tokens_per_hour=table.tokens_per_hour,
        tokens_per_day=table.tokens_per_day,
    )


def _subset(names: list[str] | None, known: tuple[str, ...], where: str, what: str) -> frozenset[str] | None:
    if names is None:
        return None
    unknown = next((n for n in names if n not in known), None)
    if unknown is not None:
        raise ConfigError(f"{_where(where)}: {unknown!r} is not {what}; choose from {', '.join(known)}.")
    return frozenset(names)


def _one_client_each(clients: Iterable[Client], identity: str) -> None:
    """Two clients with one credential would make either's limits and revocation meaningless."""
    seen: dict[str, str] = {}
    for client in clients:
        value = getattr(client, identity)
        if value is None:
            continue
        if value in seen:
            place = _where(f"[clients.{client.name}]")
            owner = token_holder(seen[value])
            raise ConfigError(f"{place} {identity} is also {owner}'s; {_fix(identity, client.name)}")
        seen[value] = client.name


def token_holder(name: str) -> str:
    """Where a client's credential is configured, as errors name it: its table, or GGUF_MCP_AUTH_TOKEN."""
    return OPTION_BY_DEST["auth_token"].env if name == DEFAULT_CLIENT else f"[clients.{name}]"


def _fix(identity: str, name: str) -> str:
    if identity == "token_sha256":
        return f"give each client a token of its own (`gguf-mcp token new {name}`)."
    return "one table per OAuth client: merge the two."
