"""The deployments: from the GGUF_MCP_CONFIG file's tables, or the single one of GGUF_DEPLOYMENT_ID or
GGUF_BASE_URL, each with its key from the environment."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import SecretStr

from gguf_mcp.config.files import TABLE_NAME, ConfigFile, DeploymentTable
from gguf_mcp.config.settings import DEFAULT_KEY_ENV, OPTION_BY_DEST, Deployment, Settings
from gguf_mcp.config.sources import secret_from_env
from gguf_mcp.config.urls import deployment_url, needs_key, normalize_base_url
from gguf_mcp.errors import ConfigError

Deployments = tuple[dict[str, Deployment], str]
"""The deployments by name, and the default one's name."""

_CONFIG = OPTION_BY_DEST["config"].setting


def build_deployments(s: Settings, file: ConfigFile, environ: Mapping[str, str]) -> Deployments:
    """A file that names deployments replaces GGUF_DEPLOYMENT_ID and GGUF_BASE_URL; one naming only
    clients (or no file: `ConfigFile()`) goes beside them."""
    single = "deployment_id" if s.deployment_id else "base_url" if s.base_url else None
    if file.deployments:
        if single is not None:
            raise ConfigError(
                f"{_CONFIG} names deployments and {OPTION_BY_DEST[single].setting} is set too: name every "
                "deployment in the TOML file and unset the other."
            )
        return _from_tables(file, environ, s.api_key)
    if file.default is not None:
        raise ConfigError(f"{_CONFIG}: default = {file.default!r} names no [deployments.<name>] table.")
    if single is None:
        raise _nothing_configured(s)
    return {"default": _single(s)}, "default"


def _nothing_configured(s: Settings) -> ConfigError:
    o = OPTION_BY_DEST
    either = f"{o['deployment_id'].setting} for GGUF Cloud, {o['base_url'].setting} for any llama-server"
    if s.config is not None:
        return ConfigError(
            f"{_CONFIG}: {str(s.config)!r} defines no [deployments.<name>] table; name the deployments there, "
            f"or set {either} beside it."
        )
    return ConfigError(f"No deployment configured: set {either}, or {_CONFIG} for several.")


def _single(s: Settings) -> Deployment:
    o = OPTION_BY_DEST
    if s.deployment_id:
        url = deployment_url(s.deployment_id, o["deployment_id"].setting)
    else:
        url = normalize_base_url(s.base_url or "", o["base_url"].setting)
    if needs_key(url) and s.api_key is None:
        raise _missing_key(DEFAULT_KEY_ENV, "the deployment")
    return Deployment(name="default", base_url=url, api_key=s.api_key)


def _from_tables(file: ConfigFile, environ: Mapping[str, str], default_key: SecretStr | None) -> Deployments:
    deployments = {name: _from_table(name, table, environ, default_key) for name, table in file.deployments.items()}
    default = file.default or next(iter(deployments))
    if default not in deployments:
        raise ConfigError(f"{_CONFIG}: default = {default!r} is not one of the deployments ({', '.join(deployments)}).")
    return deployments, default


def _from_table(
    name: str, table: DeploymentTable, environ: Mapping[str, str], default_key: SecretStr | None
) -> Deployment:
    where = f"{_CONFIG}: [deployments.{name}]"
    if not TABLE_NAME.match(name):
        raise ConfigError(f"{where}: the name must be letters, digits, '-', '_' or '.' (at most 64).")
    url = _table_url(table, where)
    # The default key (its variable or its file) serves every table that names its variable.
    key = default_key if table.api_key_env == DEFAULT_KEY_ENV else None
    key = key or secret_from_env(environ, table.api_key_env)
    if key is None and needs_key(url):
        raise _missing_key(table.api_key_env, f"deployment {name!r}")
    return Deployment(
        name=name,
        base_url=url,
        api_key=key,
        key_env=table.api_key_env,
        description=table.description.strip(),
        max_concurrency=table.max_concurrency,
    )


def _table_url(table: DeploymentTable, where: str) -> str:
    if (table.deployment_id is None) == (table.base_url is None):
        raise ConfigError(f"{where}: set exactly one of deployment_id or base_url.")
    if table.deployment_id is not None:
        return deployment_url(table.deployment_id, f"{where} deployment_id")
    return normalize_base_url(table.base_url or "", f"{where} base_url")


def _missing_key(env_name: str, what: str) -> ConfigError:
    return ConfigError(
        f"{env_name} is not set: {what} on GGUF Cloud needs the account's API key. Set it in the server's "
        f'environment (your MCP client\'s "env" block), or use {OPTION_BY_DEST["api_key_file"].setting}.'
    )
