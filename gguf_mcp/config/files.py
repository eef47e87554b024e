"""The GGUF_MCP_CONFIG file: its tables, read and checked for shape, with one line per problem.

`[deployments.<name>]` names the upstreams, `[clients.<name>]` the callers and their limits,
`[client_defaults]` the limits of OAuth clients no table names. What the tables mean together
(names that must exist, credentials that must differ) is checked where they are built:
`deployments.py` and `policies.py`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gguf_mcp.config.options import expected
from gguf_mcp.config.settings import DEFAULT_KEY_ENV, OPTION_BY_DEST, OPTIONS
from gguf_mcp.config.sources import read_text
from gguf_mcp.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

TABLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""A deployment's or client's name: short and plain, since it shows in tool schemas, logs and metrics."""

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_OWN_VARIABLES = frozenset(o.env for o in OPTIONS) - {DEFAULT_KEY_ENV}

Count = Annotated[int | None, Field(gt=0)]
NonEmptyList = Annotated[list[str] | None, Field(min_length=1)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DeploymentTable(_Table):
    """One `[deployments.<name>]` table."""

    deployment_id: str | None = None
    base_url: str | None = None
    api_key_env: Annotated[str, Field(pattern=_ENV_NAME)] = DEFAULT_KEY_ENV
    description: str = ""
    max_concurrency: Count = None

    @field_validator("api_key_env")
    @classmethod
    def _a_key_of_its_own(cls, name: str) -> str:
        # GGUF_MCP_AUTH_TOKEN here would send the clients' token to the deployment as its key.
        if name in _OWN_VARIABLES:
            raise ValueError(
                f"= {name!r} names a gguf-mcp setting, not a deployment key: a deployment gets a key of its own, "
                "never a client credential; name the variable that holds this deployment's key"
            )
        return name


class PolicyTable(_Table):
    """`[client_defaults]`, and what a `[clients.<name>]` table may use and how much."""

    deployments: NonEmptyList = None
    tools: NonEmptyList = None
    scopes: NonEmptyList = None
    metrics: bool = False
    max_concurrent: Count = None
    max_tokens: Count = None
    over_max_tokens: Literal["lower", "refuse"] = "lower"
    tokens_per_hour: Count = None
    tokens_per_day: Count = None


class ClientTable(PolicyTable):
    """One `[clients.<name>]` table: how the client is recognised, and its policy."""

    token_sha256: str | None = None
    oauth_client_id: Annotated[str | None, Field(min_length=1)] = None
    oauth_subject: Annotated[str | None, Field(min_length=1)] = None

    @field_validator("token_sha256")
    @classmethod
    def _a_digest(cls, digest: str | None) -> str | None:
        # Never quoted back: a token pasted here in place of its hash is a secret.
        if digest is not None and not _SHA256_HEX.match(digest):
            raise ValueError(
                "is not a SHA-256 in hex (64 digits 0-9, a-f); store the token's hash, never the token: "
                "`gguf-mcp token new <name>` prints a new token and its line"
            )
        return None if digest is None else digest.lower()


class ConfigFile(_Table):
    """The whole file."""

    default: str | None = None
    deployments: dict[str, DeploymentTable] = Field(default_factory=dict)
    clients: dict[str, ClientTable] = Field(default_factory=dict)
    client_defaults: PolicyTable = Field(default_factory=PolicyTable)


_TABLES: dict[str, tuple[type[BaseModel], int]] = {
    "deployments": (DeploymentTable, 2),
    "clients": (ClientTable, 2),
    "client_defaults": (PolicyTable, 1),
}
"""Each table kind, and where its keys sit in an error's location (after the table's name, if any)."""


def read_config_file(path: Path) -> ConfigFile:
    setting = OPTION_BY_DEST["config"].setting
    text = read_text(path, setting)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{setting}: {str(path)!r} is not valid TOML ({exc}).") from None
    try:
        return ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{setting}: {_toml_problem(exc)}") from None


def _toml_problem(exc: ValidationError) -> str:
    # An unknown key first: it usually explains the missing one (a typo of it).
    error = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    loc = [str(part) for part in error["loc"]]
    kind = _TABLES.get(loc[0])
    if kind is None or len(loc) < kind[1]:
        return _top_level_problem(error, loc)
    model, depth = kind
    table = f"[{'.'.join(loc[:depth])}]"
    if len(loc) == depth:
        return f"{table} must be a table of keys."
    key = loc[depth]
    if error["type"] == "extra_forbidden":
        return f"{table}: unknown key {key!r}; allowed: {', '.join(model.model_fields)}."
    return _key_problem(error, f"{table} {'.'.join(loc[depth:])}", expected(model.model_fields[key]))


def _top_level_problem(error: Mapping[str, Any], loc: list[str]) -> str:
    if error["type"] == "extra_forbidden":
        return (
            f"unknown top-level key {loc[0]!r}; expected default, [deployments.<name>], [clients.<name>] and "
            "[client_defaults]."
        )
    if loc[0] in _TABLES:
        return f"{loc[0]} must be tables: [{loc[0]}{'.<name>' if _TABLES[loc[0]][1] == 2 else ''}]."
    return _key_problem(error, loc[0], expected(ConfigFile.model_fields[loc[0]]))


_KEY_PROBLEMS = {
    "string_pattern_mismatch": "{where} = {input!r} is not an environment variable name.",
    "too_short": "{where} must name at least one; leave it out to allow all.",
    "string_type": "{where} must be a string.",
    "list_type": '{where} must be a list of strings, e.g. ["a", "b"].',
    "value_error": "{where} {message}.",
}
"""How each kind of pydantic error reads for one key; the fallback is pydantic's own words."""


def _key_problem(error: Mapping[str, Any], where: str, hint: str | None) -> str:
    """One key's problem; the value is quoted only for numbers, switches, choices and variable names."""
    if hint is not None:
        return f"{where} = {error['input']!r} is not {hint}."
    message = str(error["msg"]).removeprefix("Value error, ")
    template = _KEY_PROBLEMS.get(error["type"], "{where}: {lowered}.")
    return template.format(where=where, input=error["input"], message=message, lowered=message.lower())
