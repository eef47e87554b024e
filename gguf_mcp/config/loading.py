"""Loading: raw values from flags, environment and files, validated once, then the derived parts.

`load_settings` runs one way: gather the raw values (a flag wins over its variable; a secret comes
from its variable or its file), validate them in one `model_validate`, check the settings that go
together, build the deployments and clients from them and the GGUF_MCP_CONFIG file, then check the
rules over the whole. Anything wrong is one `ConfigError` line that names the setting and the fix,
with every secret masked.
`reload_clients` re-reads only the clients, for SIGHUP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from gguf_mcp.config.checks import check_credentials_apart, check_exposure, check_pairs
from gguf_mcp.config.deployments import build_deployments
from gguf_mcp.config.files import ConfigFile, read_config_file
from gguf_mcp.config.options import Option, expected
from gguf_mcp.config.policies import build_clients
from gguf_mcp.config.settings import OPTION_BY_DEST, OPTIONS, Settings
from gguf_mcp.config.sources import read_client_file, read_secret_file, secret_candidates
from gguf_mcp.config.urls import public_host
from gguf_mcp.errors import ConfigError
from gguf_mcp.redaction import Redactor

_SECRET_FILES = {"api_key_file": "api_key", "auth_token_file": "auth_token"}
"""Each file setting, and the secret it holds (the file wins over the secret's variable)."""
_SECRETS = ("api_key", "auth_token", "introspection_client_secret")


def load_settings(flags: Mapping[str, str | None], environ: Mapping[str, str]) -> Settings:
    """Validate the flags (`dest` -> value, None when not given) and environment into `Settings`.

    Raises `ConfigError` (one line naming the setting and the fix, every secret masked) and
    nothing else.
    """
    masked = secret_candidates(environ)
    try:
        raw = _raw_values(flags, environ, masked)
        try:
            chosen = Settings.model_validate(raw)
        except ValidationError as exc:
            raise _config_error(exc, raw) from None
        check_pairs(chosen)
        file = _config_file(chosen)
        deployments, default = build_deployments(chosen, file, environ)
        hosts = (*chosen.allowed_hosts, *_public_hosts(chosen))
        update = {"deployments": deployments, "default_deployment": default, "allowed_hosts": hosts}
        return _with_clients(chosen.model_copy(update=update), file)
    except ConfigError as exc:
        raise ConfigError(Redactor(masked).text(str(exc))) from None


def reload_clients(settings: Settings) -> Settings:
    """`settings` with the clients and client defaults read again from the GGUF_MCP_CONFIG file (for SIGHUP).

    Everything else, the deployments included, stays as loaded: a change to them needs a restart.
    Raises `ConfigError` (one line, secrets masked) when the file is wrong now; the caller keeps
    the clients it has.
    """
    try:
        return _with_clients(settings, _config_file(settings))
    except ConfigError as exc:
        raise ConfigError(Redactor(settings.secrets).text(str(exc))) from None


def _config_file(s: Settings) -> ConfigFile:
    """The GGUF_MCP_CONFIG file, or an empty one (no deployments, no clients) when none is set."""
    return read_config_file(s.config) if s.config is not None else ConfigFile()


def _with_clients(settings: Settings, file: ConfigFile) -> Settings:
    clients, defaults = build_clients(settings, file)
    complete = settings.model_copy(update={"clients": clients, "client_defaults": defaults})
    check_credentials_apart(complete)
    check_exposure(complete)
    return complete


def _public_hosts(s: Settings) -> tuple[str, ...]:
    """The public URL's host, which a reverse proxy passes on as Host, unless loopback or listed."""
    host = public_host(s.public_url) if s.public_url is not None else None
    return () if host is None or host in s.allowed_hosts else (host,)


def _raw_values(flags: Mapping[str, str | None], environ: Mapping[str, str], masked: list[str]) -> dict[str, Any]:
    """Each setting's raw text (flag, else variable), the secrets read from their files; adds secrets to `masked`."""
    raw = {o.dest: value for o in OPTIONS if (value := _given(o, flags, environ)) is not None}
    raw |= _secrets_from_files(raw)
    masked += [raw[dest] for dest in _SECRETS if dest in raw]
    return raw


def _secrets_from_files(raw: Mapping[str, str]) -> dict[str, str]:
    found = {
        secret: read_secret_file(raw[file], OPTION_BY_DEST[file].setting)
        for file, secret in _SECRET_FILES.items()
        if file in raw
    }
    if "oauth_client_file" in raw:
        client_id, secret = read_client_file(raw["oauth_client_file"], OPTION_BY_DEST["oauth_client_file"].setting)
        found |= {"introspection_client_id": client_id, "introspection_client_secret": secret}
    return found


def _given(option: Option, flags: Mapping[str, str | None], environ: Mapping[str, str]) -> str | None:
    """The option's flag, else its variable; None when neither gives anything but blanks."""
    value = flags.get(option.dest)
    if value is None:
        value = environ.get(option.env)
    if value is None or not value.strip():
        return None
    return value if option.secret else value.strip()


def _config_error(exc: ValidationError, raw: Mapping[str, Any]) -> ConfigError:
    """The first problem pydantic found, as one line naming the setting (its value as given, unless secret)."""
    error = exc.errors()[0]
    dest = str(error["loc"][0]) if error["loc"] else ""
    option = OPTION_BY_DEST.get(dest)
    message = str(error["msg"]).removeprefix("Value error, ").rstrip(".")
    if option is None:
        return ConfigError(f"{message}.")
    hint = expected(Settings.model_fields[dest])
    if hint is not None and not option.secret:
        return ConfigError(f"{option.setting}: {raw[dest]!r} is not {hint}.")
    return ConfigError(f"{option.setting}: {message}.")
