"""Settings: read once at start-up from flags, environment and an optional TOML file.

Every setting has an environment variable and a flag (`OPTIONS`, which `--help`, the README
and `server.json` all describe). Anything wrong becomes one `ConfigError` line that names the
setting and the fix; nothing here raises anything else.
"""

from __future__ import annotations

import ipaddress
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import SecretStr

from gguf_mcp.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

GGUF_CLOUD_ROOT = "https://modelslab.com/api/gguf"
DEFAULT_KEY_ENV = "MODELSLAB_API_KEY"
DEFAULT_TIMEOUT = 600.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_MAX_SESSIONS = 256
DEFAULT_SESSION_IDLE_TIMEOUT = 600.0
TOOL_NAMES = ("list_models", "chat", "messages", "complete", "embed")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
MIN_TOKEN_LENGTH = 32

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DEPLOYMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Option:
    """One setting as users see it: its flag, its environment variable and its help."""

    dest: str
    flag: str
    env: str
    help: str
    metavar: str | None = None
    secret: bool = False
    switch: bool = False  # a flag without a value (sets "true"); its variable takes true/false


OPTIONS: tuple[Option, ...] = (
    Option(
        "api_key",
        "",
        DEFAULT_KEY_ENV,
        "ModelsLab API key for GGUF Cloud (a secret: environment or --api-key-file only). Optional for a "
        "self-hosted llama-server started without --api-key.",
        secret=True,
    ),
    Option(
        "api_key_file",
        "--api-key-file",
        "MODELSLAB_API_KEY_FILE",
        f"File holding the API key (instead of {DEFAULT_KEY_ENV}).",
        "PATH",
    ),
    Option(
        "deployment_id",
        "--deployment-id",
        "GGUF_DEPLOYMENT_ID",
        f"GGUF Cloud deployment id; the base URL becomes {GGUF_CLOUD_ROOT}/<id>.",
        "ID",
    ),
    Option(
        "base_url",
        "--base-url",
        "GGUF_BASE_URL",
        "Base URL of a deployment or of any llama-server, with or without /v1 (instead of GGUF_DEPLOYMENT_ID).",
        "URL",
    ),
    Option(
        "config",
        "--config",
        "GGUF_MCP_CONFIG",
        "TOML file naming several deployments (see README); replaces GGUF_DEPLOYMENT_ID and GGUF_BASE_URL.",
        "PATH",
    ),
    Option(
        "timeout",
        "--timeout",
        "GGUF_MCP_TIMEOUT",
        f"Upstream read time-out in seconds (default {DEFAULT_TIMEOUT:g}; long generations need long ones).",
        "SECONDS",
    ),
    Option(
        "max_retries",
        "--max-retries",
        "GGUF_MCP_MAX_RETRIES",
        f"Retries for a deployment that is not ready, restarting or rate limiting (default {DEFAULT_MAX_RETRIES}).",
        "N",
    ),
    Option(
        "deadline",
        "--deadline",
        "GGUF_MCP_DEADLINE",
        "Seconds after which chat/messages stop and return the partial output, marked incomplete (default: "
        "none). Set it below a client's fixed time-out, e.g. 50 for Claude Desktop's 60.",
        "SECONDS",
    ),
    Option(
        "transport",
        "--transport",
        "GGUF_MCP_TRANSPORT",
        "stdio (default; for clients that spawn the server) or http (Streamable HTTP at /mcp).",
        "{stdio,http}",
    ),
    Option(
        "tools",
        "--tools",
        "GGUF_MCP_TOOLS",
        f"Comma-separated tools to expose (default: all of {', '.join(TOOL_NAMES)}); fewer tools, less context.",
        "LIST",
    ),
    Option(
        "host",
        "--host",
        "GGUF_MCP_HOST",
        "HTTP bind address (default 127.0.0.1). Any other address requires GGUF_MCP_AUTH_TOKEN.",
        "HOST",
    ),
    Option("port", "--port", "GGUF_MCP_PORT", "HTTP port (default 8000).", "PORT"),
    Option(
        "auth_token",
        "",
        "GGUF_MCP_AUTH_TOKEN",
        "Bearer token HTTP clients must send (a secret: environment or --auth-token-file only).",
        secret=True,
    ),
    Option(
        "auth_token_file",
        "--auth-token-file",
        "GGUF_MCP_AUTH_TOKEN_FILE",
        "File holding the HTTP clients' bearer token (instead of GGUF_MCP_AUTH_TOKEN).",
        "PATH",
    ),
    Option(
        "allowed_hosts",
        "--allowed-hosts",
        "GGUF_MCP_ALLOWED_HOSTS",
        "Comma-separated Host headers to accept besides loopback, e.g. mcp.example.com (reverse proxies).",
        "LIST",
    ),
    Option(
        "allowed_origins",
        "--allowed-origins",
        "GGUF_MCP_ALLOWED_ORIGINS",
        "Comma-separated browser Origins to accept besides loopback, e.g. https://app.example.com.",
        "LIST",
    ),
    Option(
        "max_connections",
        "--max-connections",
        "GGUF_MCP_MAX_CONNECTIONS",
        f"HTTP connections open at once (default {DEFAULT_MAX_CONNECTIONS}); past it, a new connection closes the "
        "one that has waited longest for a request header, or is closed itself. Keep it below the open-file limit.",
        "N",
    ),
    Option(
        "header_timeout",
        "--header-timeout",
        "GGUF_MCP_HEADER_TIMEOUT",
        f"Seconds an HTTP connection gets to send a complete request header, from connecting or from its "
        f"previous response (default {DEFAULT_HEADER_TIMEOUT:g}); then it is closed.",
        "SECONDS",
    ),
    Option(
        "max_sessions",
        "--max-sessions",
        "GGUF_MCP_MAX_SESSIONS",
        f"MCP sessions open at once over HTTP (default {DEFAULT_MAX_SESSIONS}); past it, a new session gets 503.",
        "N",
    ),
    Option(
        "session_idle_timeout",
        "--session-idle-timeout",
        "GGUF_MCP_SESSION_IDLE_TIMEOUT",
        f"Seconds after which an MCP session with no request in flight is closed (default "
        f"{DEFAULT_SESSION_IDLE_TIMEOUT:g}); its client then opens a new one.",
        "SECONDS",
    ),
    Option(
        "stateless",
        "--stateless",
        "GGUF_MCP_STATELESS",
        "HTTP without sessions, for several workers behind any load balancer (2025-era clients lose "
        "cancellation; see README).",
        switch=True,
    ),
    Option(
        "log_format",
        "--log-format",
        "GGUF_MCP_LOG_FORMAT",
        "text (default) or json: one JSON object per line on stderr.",
        "{text,json}",
    ),
    Option(
        "log_level",
        "--log-level",
        "GGUF_MCP_LOG_LEVEL",
        "Log level on stderr: debug, info, warning (default) or error.",
        "LEVEL",
    ),
)
OPTION_BY_DEST = {o.dest: o for o in OPTIONS}


@dataclass(frozen=True)
class Deployment:
    """One upstream: where it is, how to authenticate, and what the agent is told about it."""

    name: str
    base_url: str
    api_key: SecretStr | None
    key_env: str = DEFAULT_KEY_ENV
    description: str = ""


@dataclass(frozen=True)
class Settings:
    """Everything the server needs, validated."""

    deployments: dict[str, Deployment]
    default_deployment: str
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    deadline: float | None = None
    transport: Literal["stdio", "http"] = "stdio"
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "WARNING"
    log_format: Literal["text", "json"] = "text"
    tools: tuple[str, ...] = TOOL_NAMES
    auth_token: SecretStr | None = None
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    stateless: bool = False
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_sessions: int = DEFAULT_MAX_SESSIONS
    session_idle_timeout: float = DEFAULT_SESSION_IDLE_TIMEOUT
    secrets: tuple[str, ...] = field(default=(), repr=False)


def _setting(dest: str) -> str:
    o = OPTION_BY_DEST[dest]
    return f"{o.env} ({o.flag})" if o.flag else o.env


def normalize_base_url(raw: str, setting: str) -> str:
    """Return the deployment root for any URL form users paste: root or `/v1`, any trailing slash."""
    url = raw.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{setting}: {raw!r} is not an http(s) URL. Use e.g. {GGUF_CLOUD_ROOT}/<deployment_id> or "
            "http://127.0.0.1:8080 for a local llama-server."
        )
    if parts.username or parts.password:
        raise ConfigError(f"{setting}: the URL must not carry credentials; put the key in {DEFAULT_KEY_ENV}.")
    if parts.query or parts.fragment:
        # Not quoted: a query string is where people paste keys.
        raise ConfigError(f"{setting}: the URL has a query or fragment (?... or #...); give only the base URL.")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError(f"{setting}: {raw!r} has an invalid port.") from None
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{parts.scheme}://{parts.netloc}{path}"


def deployment_url(deployment_id: str, setting: str) -> str:
    if not _DEPLOYMENT_ID.match(deployment_id):
        raise ConfigError(
            f"{setting}: {deployment_id!r} is not a deployment id (letters, digits, '-' and '_'); copy it "
            "from the GGUF Cloud dashboard."
        )
    return f"{GGUF_CLOUD_ROOT}/{deployment_id}"


def _read_secret_file(path: str, dest: str) -> str:
    try:
        value = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{_setting(dest)}: cannot read {path!r} ({exc.strerror}).") from None
    if not value:
        raise ConfigError(f"{_setting(dest)}: {path!r} is empty; put the secret in it.")
    return value


def _list(raw: str | None, dest: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in (raw or "").split(",") if item.strip())
    for item in items:
        if any(c.isspace() for c in item):
            raise ConfigError(f"{_setting(dest)}: {item!r} contains spaces; separate entries with commas.")
    return items


def _is_loopback_host(host: str) -> bool:
    """Whether a Host value (name or address, with or without a port) names this machine's loopback."""
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _bool(raw: str | None, dest: str) -> bool:
    if raw is None:
        return False
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{_setting(dest)}: {raw!r} is not true or false.")


def _positive_float(raw: str, dest: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{_setting(dest)}: {raw!r} is not a positive number of seconds (e.g. 60).")
    return value


def _int_in(raw: str, dest: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{_setting(dest)}: {raw!r} is not a whole number from {low} to {high}.")
    return value


def _key(environ: Mapping[str, str], env_name: str, required_for: str | None) -> SecretStr | None:
    value = environ.get(env_name, "").strip()
    if value:
        return SecretStr(value)
    if required_for:
        raise ConfigError(
            f"{env_name} is not set: deployment {required_for!r} on GGUF Cloud needs the account's API key. "
            "Set it in the server's environment (your MCP client's \"env\" block)."
        )
    return None


def _needs_key(base_url: str) -> bool:
    return base_url.startswith(GGUF_CLOUD_ROOT + "/")


def _deployments_from_toml(
    path: str, environ: Mapping[str, str], default_key: str | None
) -> tuple[dict[str, Deployment], str]:
    setting = _setting("config")
    try:
        data = tomllib.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path!r} ({exc.strerror}).") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{setting}: {path!r} is not valid TOML ({exc}).") from None

    unknown = set(data) - {"default", "deployments"}
    if unknown:
        raise ConfigError(
            f"{setting}: unknown top-level key(s) {sorted(unknown)}; expected 'default' and [deployments.<name>]."
        )
    tables = data.get("deployments")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{setting}: {path!r} defines no [deployments.<name>] table.")

    deployments: dict[str, Deployment] = {}
    for name, table in tables.items():
        where = f"{setting}: [deployments.{name}]"
        if not _NAME.match(name):
            raise ConfigError(f"{where}: the name must be letters, digits, '-', '_' or '.' (at most 64).")
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table.")
        extra = set(table) - {"deployment_id", "base_url", "api_key_env", "description"}
        if extra:
            raise ConfigError(
                f"{where}: unknown key(s) {sorted(extra)}; allowed: deployment_id, base_url, api_key_env, description."
            )
        deployments[name] = _deployment_from_table(name, table, where, environ, default_key)

    default = data.get("default", next(iter(deployments)))
    if default not in deployments:
        raise ConfigError(f"{setting}: default = {default!r} is not one of the deployments ({', '.join(deployments)}).")
    return deployments, default


def _deployment_from_table(
    name: str, table: dict[str, Any], where: str, environ: Mapping[str, str], default_key: str | None
) -> Deployment:
    for k in table:
        if not isinstance(table[k], str):
            raise ConfigError(f"{where}: {k} must be a string.")
    dep_id: str | None = table.get("deployment_id")
    base: str | None = table.get("base_url")
    if dep_id is not None and base is None:
        url = deployment_url(dep_id, f"{where} deployment_id")
    elif base is not None and dep_id is None:
        url = normalize_base_url(base, f"{where} base_url")
    else:
        raise ConfigError(f"{where}: set exactly one of deployment_id or base_url.")
    key_env = table.get("api_key_env", DEFAULT_KEY_ENV)
    if not _ENV_NAME.match(key_env):
        raise ConfigError(f"{where}: api_key_env = {key_env!r} is not an environment variable name.")
    if key_env == DEFAULT_KEY_ENV and default_key is not None:
        key: SecretStr | None = SecretStr(default_key)
    else:
        key = _key(environ, key_env, name if _needs_key(url) else None)
    return Deployment(name, url, key, key_env, table.get("description", "").strip())


def parse_settings(values: Mapping[str, str | None], environ: Mapping[str, str]) -> Settings:
    """Validate raw values (flag value if given, else the environment) into `Settings`."""

    def get(dest: str) -> str | None:
        value = values.get(dest)
        if value is None:
            value = environ.get(OPTION_BY_DEST[dest].env)
        return value.strip() if value is not None and value.strip() else None

    key_file = get("api_key_file")
    default_key = (
        _read_secret_file(key_file, "api_key_file") if key_file else (environ.get(DEFAULT_KEY_ENV, "").strip() or None)
    )

    config, dep_id, base = get("config"), get("deployment_id"), get("base_url")
    if config and (dep_id or base):
        other = _setting("deployment_id" if dep_id else "base_url")
        raise ConfigError(
            f"{_setting('config')} is set together with {other}: name every deployment in the TOML file and "
            "unset the other."
        )
    if dep_id and base:
        raise ConfigError(f"Set only one of {_setting('deployment_id')} or {_setting('base_url')}, not both.")
    if config:
        deployments, default = _deployments_from_toml(config, environ, default_key)
    elif dep_id or base:
        url = (
            deployment_url(dep_id, _setting("deployment_id"))
            if dep_id
            else normalize_base_url(base or "", _setting("base_url"))
        )
        if _needs_key(url) and default_key is None:
            raise ConfigError(
                f"{DEFAULT_KEY_ENV} is not set: GGUF Cloud needs the account's API key. Set it in the server's "
                f'environment (your MCP client\'s "env" block), or use {_setting("api_key_file")}.'
            )
        key = SecretStr(default_key) if default_key else None
        deployments, default = {"default": Deployment("default", url, key)}, "default"
    else:
        raise ConfigError(
            f"No deployment configured: set {_setting('deployment_id')} for GGUF Cloud, {_setting('base_url')} for "
            f"any llama-server, or {_setting('config')} for several."
        )

    transport = get("transport") or "stdio"
    if transport not in ("stdio", "http"):
        raise ConfigError(f"{_setting('transport')}: {transport!r} is not 'stdio' or 'http'.")
    log_level = (get("log_level") or "warning").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{_setting('log_level')}: {log_level.lower()!r} is not debug, info, warning or error.")
    timeout, retries, port, deadline = get("timeout"), get("max_retries"), get("port"), get("deadline")
    connections, header_timeout = get("max_connections"), get("header_timeout")
    sessions, session_idle = get("max_sessions"), get("session_idle_timeout")
    host = get("host") or "127.0.0.1"
    log_format = get("log_format") or "text"
    if log_format not in ("text", "json"):
        raise ConfigError(f"{_setting('log_format')}: {log_format!r} is not 'text' or 'json'.")
    tools = _list(get("tools"), "tools") or TOOL_NAMES
    unknown_tools = [t for t in tools if t not in TOOL_NAMES]
    if unknown_tools:
        raise ConfigError(
            f"{_setting('tools')}: unknown tool(s) {', '.join(unknown_tools)}; choose from {', '.join(TOOL_NAMES)}."
        )

    token_file = get("auth_token_file")
    token_value = _read_secret_file(token_file, "auth_token_file") if token_file else get("auth_token")
    auth_token = SecretStr(token_value) if token_value else None
    if transport == "http" and auth_token is None and host not in LOOPBACK_HOSTS:
        raise ConfigError(
            f"{_setting('host')} = {host!r} exposes the server beyond this machine, and anyone who reaches it "
            "spends your API key: set GGUF_MCP_AUTH_TOKEN (or --auth-token-file) to a long random token, or bind "
            "127.0.0.1."
        )
    allowed_hosts = _list(get("allowed_hosts"), "allowed_hosts")
    public = [h for h in allowed_hosts if not _is_loopback_host(h)]
    if transport == "http" and auth_token is None and public:
        raise ConfigError(
            f"{_setting('allowed_hosts')} names {public[0]!r}: clients reach the server from beyond this machine "
            "(a reverse proxy), and anyone who reaches it spends your API key: set GGUF_MCP_AUTH_TOKEN (or "
            "--auth-token-file) to a long random token, or list only loopback names."
        )
    if transport == "http" and auth_token is not None and len(auth_token.get_secret_value()) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"{_setting('auth_token_file') if token_file else 'GGUF_MCP_AUTH_TOKEN'}: the token has "
            f"{len(auth_token.get_secret_value())} characters; use at least {MIN_TOKEN_LENGTH} random ones, e.g. "
            "from `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`."
        )
    secrets = tuple(d.api_key.get_secret_value() for d in deployments.values() if d.api_key)
    if auth_token is not None:
        secrets += (auth_token.get_secret_value(),)
    return Settings(
        deployments=deployments,
        default_deployment=default,
        timeout=_positive_float(timeout, "timeout") if timeout else DEFAULT_TIMEOUT,
        max_retries=_int_in(retries, "max_retries", 0, 10) if retries else DEFAULT_MAX_RETRIES,
        deadline=_positive_float(deadline, "deadline") if deadline else None,
        transport=transport,  # type: ignore[arg-type]  # checked just above
        host=host,
        port=_int_in(port, "port", 0, 65535) if port else 8000,
        log_level=log_level,
        log_format=log_format,  # type: ignore[arg-type]  # checked above
        tools=tuple(dict.fromkeys(tools)),
        auth_token=auth_token,
        allowed_hosts=allowed_hosts,
        allowed_origins=_list(get("allowed_origins"), "allowed_origins"),
        stateless=_bool(get("stateless"), "stateless"),
        max_connections=_int_in(connections, "max_connections", 1, 65535) if connections else DEFAULT_MAX_CONNECTIONS,
        header_timeout=_positive_float(header_timeout, "header_timeout") if header_timeout else DEFAULT_HEADER_TIMEOUT,
        max_sessions=_int_in(sessions, "max_sessions", 1, 100_000) if sessions else DEFAULT_MAX_SESSIONS,
        session_idle_timeout=(
            _positive_float(session_idle, "session_idle_timeout") if session_idle else DEFAULT_SESSION_IDLE_TIMEOUT
        ),
        secrets=secrets,
    )
