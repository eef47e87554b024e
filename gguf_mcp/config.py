"""Settings: one validated pydantic model, read once at start-up from flags, environment and files.

Every field of `Settings` that users set carries its environment variable, flag and help text
(`setting()`); `--help`, the README table and `server.json` are all derived from those fields
(`OPTIONS`). `load_settings` gathers the raw values (a flag wins over its variable, a secret comes
from its variable or its file) and validates them in one `model_validate`; anything wrong becomes
one `ConfigError` line that names the setting and the fix, with every secret value masked.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from gguf_mcp.errors import ConfigError
from gguf_mcp.redaction import Redactor

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

GGUF_CLOUD_ROOT = "https://modelslab.com/api/gguf"
DEFAULT_KEY_ENV = "MODELSLAB_API_KEY"
TOOL_NAMES = ("list_models", "chat", "messages", "complete", "embed")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
MIN_TOKEN_LENGTH = 32

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DEPLOYMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_SECRET_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET", "_PASSWORD")


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
    file: bool = False  # the value is a path (server.json's "filepath")
    number: bool = False

    @property
    def setting(self) -> str:
        """How error messages name it: the variable, and the flag when there is one."""
        return f"{self.env} ({self.flag})" if self.flag else self.env


def setting(
    default: Any,
    env: str,
    flag: str,
    help: str,
    *,
    metavar: str | None = None,
    secret: bool = False,
    switch: bool = False,
    file: bool = False,
    **constraints: Any,
) -> Any:
    """A user-facing field: its default, constraints, and how users set it."""
    extra: JsonDict = {"env": env, "flag": flag, "metavar": metavar, "secret": secret, "switch": switch, "file": file}
    return Field(default, description=help, json_schema_extra=extra, **constraints)


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


CommaList = Annotated[tuple[str, ...], BeforeValidator(_comma_list)]


class Deployment(BaseModel):
    """One upstream: where it is, how to authenticate, and what the agent is told about it."""

    model_config = ConfigDict(frozen=True)

    name: str
    base_url: str
    api_key: SecretStr | None
    key_env: str = DEFAULT_KEY_ENV
    description: str = ""


class DeploymentTable(BaseModel):
    """One `[deployments.<name>]` table of the TOML file."""

    model_config = ConfigDict(extra="forbid", strict=True)

    deployment_id: str | None = None
    base_url: str | None = None
    api_key_env: Annotated[str, Field(pattern=_ENV_NAME)] = DEFAULT_KEY_ENV
    description: str = ""


class ConfigFile(BaseModel):
    """The TOML file naming several deployments."""

    model_config = ConfigDict(extra="forbid", strict=True)

    default: str | None = None
    deployments: Annotated[dict[str, DeploymentTable], Field(min_length=1)]


class Settings(BaseModel):
    """Everything the server needs, validated. Fields with an `env` are what users set."""

    model_config = ConfigDict(frozen=True, validate_default=False)

    # Where the deployments are (exactly one of these three).
    deployment_id: str | None = setting(
        None,
        "GGUF_DEPLOYMENT_ID",
        "--deployment-id",
        f"GGUF Cloud deployment id; the base URL becomes {GGUF_CLOUD_ROOT}/<id>.",
        metavar="ID",
    )
    base_url: str | None = setting(
        None,
        "GGUF_BASE_URL",
        "--base-url",
        "Base URL of a deployment or of any llama-server, with or without /v1 (instead of GGUF_DEPLOYMENT_ID).",
        metavar="URL",
    )
    config: Path | None = setting(
        None,
        "GGUF_MCP_CONFIG",
        "--config",
        "TOML file naming several deployments (see README); replaces GGUF_DEPLOYMENT_ID and GGUF_BASE_URL.",
        metavar="PATH",
        file=True,
    )
    api_key: SecretStr | None = setting(
        None,
        DEFAULT_KEY_ENV,
        "",
        "ModelsLab API key for GGUF Cloud (a secret: environment or --api-key-file only). Optional for a "
        "self-hosted llama-server started without --api-key.",
        secret=True,
    )
    api_key_file: Path | None = setting(
        None,
        "MODELSLAB_API_KEY_FILE",
        "--api-key-file",
        f"File holding the API key (instead of {DEFAULT_KEY_ENV}).",
        metavar="PATH",
        file=True,
    )
    # Upstream requests.
    timeout: float = setting(
        600.0,
        "GGUF_MCP_TIMEOUT",
        "--timeout",
        "Upstream read time-out in seconds (default 600; long generations need long ones).",
        metavar="SECONDS",
        gt=0,
        allow_inf_nan=False,
    )
    max_retries: int = setting(
        3,
        "GGUF_MCP_MAX_RETRIES",
        "--max-retries",
        "Retries for a deployment that is not ready, restarting or rate limiting (default 3).",
        metavar="N",
        ge=0,
        le=10,
    )
    deadline: float | None = setting(
        None,
        "GGUF_MCP_DEADLINE",
        "--deadline",
        "Seconds after which chat/messages stop and return the partial output, marked incomplete (default: "
        "none). Set it below a client's fixed time-out, e.g. 50 for Claude Desktop's 60.",
        metavar="SECONDS",
        gt=0,
        allow_inf_nan=False,
    )
    upstream_connections: int = setting(
        256,
        "GGUF_MCP_UPSTREAM_CONNECTIONS",
        "--upstream-connections",
        "Most connections open to the deployments at once, i.e. generations in flight (default 256); "
        "calls beyond it wait for a free one.",
        metavar="N",
        ge=1,
        le=100_000,
    )
    # What the agent sees.
    tools: CommaList = setting(
        TOOL_NAMES,
        "GGUF_MCP_TOOLS",
        "--tools",
        f"Comma-separated tools to expose (default: all of {', '.join(TOOL_NAMES)}); fewer tools, less context.",
        metavar="LIST",
    )
    # Transport.
    transport: Annotated[Literal["stdio", "http"], BeforeValidator(_lower)] = setting(
        "stdio",
        "GGUF_MCP_TRANSPORT",
        "--transport",
        "stdio (default; for clients that spawn the server) or http (Streamable HTTP at /mcp).",
        metavar="{stdio,http}",
    )
    host: str = setting(
        "127.0.0.1",
        "GGUF_MCP_HOST",
        "--host",
        "HTTP bind address (default 127.0.0.1). Any other address requires GGUF_MCP_AUTH_TOKEN.",
        metavar="HOST",
    )
    port: int = setting(8000, "GGUF_MCP_PORT", "--port", "HTTP port (default 8000).", metavar="PORT", ge=0, le=65535)
    auth_token: SecretStr | None = setting(
        None,
        "GGUF_MCP_AUTH_TOKEN",
        "",
        f"Bearer token HTTP clients must send, at least {MIN_TOKEN_LENGTH} characters (a secret: environment or "
        "--auth-token-file only).",
        secret=True,
    )
    auth_token_file: Path | None = setting(
        None,
        "GGUF_MCP_AUTH_TOKEN_FILE",
        "--auth-token-file",
        "File holding the HTTP clients' bearer token (instead of GGUF_MCP_AUTH_TOKEN).",
        metavar="PATH",
        file=True,
    )
    allowed_hosts: CommaList = setting(
        (),
        "GGUF_MCP_ALLOWED_HOSTS",
        "--allowed-hosts",
        "Comma-separated Host headers to accept besides loopback, e.g. mcp.example.com (reverse proxies).",
        metavar="LIST",
    )
    allowed_origins: CommaList = setting(
        (),
        "GGUF_MCP_ALLOWED_ORIGINS",
        "--allowed-origins",
        "Comma-separated browser Origins to accept besides loopback, e.g. https://app.example.com.",
        metavar="LIST",
    )
    max_connections: int = setting(
        256,
        "GGUF_MCP_MAX_CONNECTIONS",
        "--max-connections",
        "HTTP connections open at once (default 256); past it, a new connection closes the one that has waited "
        "longest for a request header or body, or is closed itself. Keep it below the open-file limit.",
        metavar="N",
        ge=1,
        le=65535,
    )
    header_timeout: float = setting(
        10.0,
        "GGUF_MCP_HEADER_TIMEOUT",
        "--header-timeout",
        "Seconds an HTTP connection gets to send a complete request header, from connecting or from its previous "
        "response (default 10); then it is closed.",
        metavar="SECONDS",
        gt=0,
        allow_inf_nan=False,
    )
    body_timeout: float = setting(
        30.0,
        "GGUF_MCP_BODY_TIMEOUT",
        "--body-timeout",
        "Seconds an HTTP request gets to send its whole body once its header is complete (default 30); then its "
        "connection is closed.",
        metavar="SECONDS",
        gt=0,
        allow_inf_nan=False,
    )
    max_sessions: int = setting(
        256,
        "GGUF_MCP_MAX_SESSIONS",
        "--max-sessions",
        "MCP sessions open at once over HTTP (default 256); past it, a new session gets 503.",
        metavar="N",
        ge=1,
        le=100_000,
    )
    session_idle_timeout: float = setting(
        600.0,
        "GGUF_MCP_SESSION_IDLE_TIMEOUT",
        "--session-idle-timeout",
        "Seconds after which an MCP session with no request in flight is closed (default 600); its client then "
        "opens a new one.",
        metavar="SECONDS",
        gt=0,
        allow_inf_nan=False,
    )
    stateless: bool = setting(
        False,
        "GGUF_MCP_STATELESS",
        "--stateless",
        "HTTP without sessions, for several workers behind any load balancer (2025-era clients lose "
        "cancellation; see README).",
        switch=True,
    )
    # Logs.
    log_format: Annotated[Literal["text", "json"], BeforeValidator(_lower)] = setting(
        "text",
        "GGUF_MCP_LOG_FORMAT",
        "--log-format",
        "text (default) or json: one JSON object per line on stderr.",
        metavar="{text,json}",
    )
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(str.upper)] = setting(
        "WARNING",
        "GGUF_MCP_LOG_LEVEL",
        "--log-level",
        "Log level on stderr: debug, info, warning (default) or error.",
        metavar="LEVEL",
    )

    # Derived by the validator below, not set by users.
    deployments: dict[str, Deployment] = Field(default_factory=dict, exclude=True)
    default_deployment: str = Field("", exclude=True)

    @field_validator("api_key", "auth_token")
    @classmethod
    def _one_visible_line(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None:
            _check_one_visible_line(value.get_secret_value())
        return value

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, tools: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [t for t in tools if t not in TOOL_NAMES]
        if unknown:
            raise ValueError(f"unknown tool(s) {', '.join(unknown)}; choose from {', '.join(TOOL_NAMES)}")
        return tuple(dict.fromkeys(tools)) or TOOL_NAMES

    @field_validator("allowed_hosts", "allowed_origins")
    @classmethod
    def _no_spaces(cls, items: tuple[str, ...]) -> tuple[str, ...]:
        for item in items:
            if any(c.isspace() for c in item):
                raise ValueError(f"{item!r} contains spaces; separate entries with commas")
        return items

    @model_validator(mode="after")
    def _deployments_and_exposure(self, info: ValidationInfo) -> Settings:
        environ: Mapping[str, str] = (info.context or {}).get("environ", {})
        if not self.deployments:
            deployments, default = _deployments(self, environ)
            object.__setattr__(self, "deployments", deployments)
            object.__setattr__(self, "default_deployment", default)
        if self.transport == "http":
            _check_exposure(self)
        return self

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value this process holds: the deployments' keys and the clients' token."""
        found = [d.api_key.get_secret_value() for d in self.deployments.values() if d.api_key]
        if self.auth_token is not None:
            found.append(self.auth_token.get_secret_value())
        return tuple(dict.fromkeys(found))


def _options() -> tuple[Option, ...]:
    options = []
    for dest, field in Settings.model_fields.items():
        extra = field.json_schema_extra
        if not isinstance(extra, dict):
            continue
        number = field.annotation in (int, float, int | None, float | None)
        options.append(
            Option(
                dest=dest,
                flag=str(extra["flag"]),
                env=str(extra["env"]),
                help=field.description or "",
                metavar=extra["metavar"] if isinstance(extra["metavar"], str) else None,
                secret=bool(extra["secret"]),
                switch=bool(extra["switch"]),
                file=bool(extra["file"]),
                number=number,
            )
        )
    return tuple(options)


OPTIONS: tuple[Option, ...] = _options()
"""Every user-facing setting, in declaration order: what `--help`, the README and server.json list."""
OPTION_BY_DEST = {o.dest: o for o in OPTIONS}


# --- URLs -----------------------------------------------------------------------------------------


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


def _needs_key(base_url: str) -> bool:
    return base_url.startswith(GGUF_CLOUD_ROOT + "/")


# --- Deployments ------------------------------------------------------------------------------


def _missing_key(env_name: str, what: str) -> ConfigError:
    return ConfigError(
        f"{env_name} is not set: {what} on GGUF Cloud needs the account's API key. Set it in the server's "
        f'environment (your MCP client\'s "env" block), or use {OPTION_BY_DEST["api_key_file"].setting}.'
    )


def _deployments(s: Settings, environ: Mapping[str, str]) -> tuple[dict[str, Deployment], str]:
    o = OPTION_BY_DEST
    if s.config and (s.deployment_id or s.base_url):
        other = o["deployment_id" if s.deployment_id else "base_url"].setting
        raise ConfigError(
            f"{o['config'].setting} is set together with {other}: name every deployment in the TOML file and "
            "unset the other."
        )
    if s.deployment_id and s.base_url:
        raise ConfigError(f"Set only one of {o['deployment_id'].setting} or {o['base_url'].setting}, not both.")
    if s.config:
        return _deployments_from_toml(s.config, environ, s.api_key)
    if s.deployment_id or s.base_url:
        url = (
            deployment_url(s.deployment_id, o["deployment_id"].setting)
            if s.deployment_id
            else normalize_base_url(s.base_url or "", o["base_url"].setting)
        )
        if _needs_key(url) and s.api_key is None:
            raise _missing_key(DEFAULT_KEY_ENV, "the deployment")
        return {"default": Deployment(name="default", base_url=url, api_key=s.api_key)}, "default"
    raise ConfigError(
        f"No deployment configured: set {o['deployment_id'].setting} for GGUF Cloud, {o['base_url'].setting} for "
        f"any llama-server, or {o['config'].setting} for several."
    )


def _deployments_from_toml(
    path: Path, environ: Mapping[str, str], default_key: SecretStr | None
) -> tuple[dict[str, Deployment], str]:
    setting = OPTION_BY_DEST["config"].setting
    text = _read_text(path, setting)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{setting}: {str(path)!r} is not valid TOML ({exc}).") from None
    try:
        parsed = ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{setting}: {_toml_problem(exc)}") from None

    deployments: dict[str, Deployment] = {}
    for name, table in parsed.deployments.items():
        where = f"{setting}: [deployments.{name}]"
        if not _NAME.match(name):
            raise ConfigError(f"{where}: the name must be letters, digits, '-', '_' or '.' (at most 64).")
        if (table.deployment_id is None) == (table.base_url is None):
            raise ConfigError(f"{where}: set exactly one of deployment_id or base_url.")
        url = (
            deployment_url(table.deployment_id, f"{where} deployment_id")
            if table.deployment_id is not None
            else normalize_base_url(table.base_url or "", f"{where} base_url")
        )
        if table.api_key_env == DEFAULT_KEY_ENV and default_key is not None:
            key: SecretStr | None = default_key
        else:
            key = _secret_from_env(environ, table.api_key_env)
            if key is None and _needs_key(url):
                raise _missing_key(table.api_key_env, f"deployment {name!r}")
        deployments[name] = Deployment(
            name=name, base_url=url, api_key=key, key_env=table.api_key_env, description=table.description.strip()
        )

    default = parsed.default or next(iter(deployments))
    if default not in deployments:
        raise ConfigError(f"{setting}: default = {default!r} is not one of the deployments ({', '.join(deployments)}).")
    return deployments, default


def _toml_problem(exc: ValidationError) -> str:
    # An unknown key first: it usually explains the missing one (a typo of it).
    error = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    loc = [str(part) for part in error["loc"]]
    if error["type"] == "extra_forbidden":
        if len(loc) == 1:
            return f"unknown top-level key {loc[0]!r}; expected 'default' and [deployments.<name>]."
        return (
            f"[deployments.{loc[1]}]: unknown key {loc[-1]!r}; allowed: deployment_id, base_url, api_key_env, "
            "description."
        )
    if loc == ["deployments"]:
        return "defines no [deployments.<name>] table."
    where = f"[deployments.{loc[1]}] {'.'.join(loc[2:])}" if loc[0] == "deployments" and len(loc) > 1 else loc[0]
    if loc[-1] == "api_key_env" and error["type"] == "string_pattern_mismatch":
        return f"{where} = {error['input']!r} is not an environment variable name."
    if error["type"] == "string_type":
        return f"{where} must be a string."
    return f"{where}: {error['msg'].lower()}."


# --- Reading raw values -----------------------------------------------------------------------


def _read_text(path: Path, setting: str) -> str:
    try:
        raw = path.expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {str(path)!r} ({exc.strerror}).") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{setting}: {str(path)!r} is not UTF-8 text (byte {exc.start + 1} is invalid); save it as UTF-8."
        ) from None


def _read_secret_file(path: str, dest: str) -> str:
    setting = OPTION_BY_DEST[dest].setting
    value = _read_text(Path(path), setting)
    # One trailing line break is how editors save a file; anything else inside is a mistake.
    value = value.removesuffix("\n").removesuffix("\r")
    if not value.strip():
        raise ConfigError(f"{setting}: {path!r} is empty; put the secret in it.")
    return value


def _check_one_visible_line(secret: str) -> None:
    """A key or token is one line of visible characters; say where it is not (never what it holds)."""
    bad = next((i for i, c in enumerate(secret) if not c.isprintable() or c.isspace()), None)
    if bad is not None:
        raise ValueError(
            f"the value has whitespace or a control character at position {bad + 1} (a second line, a pasted "
            "CR/LF?); it must be one line of visible characters: copy it again"
        )


def _secret_from_env(environ: Mapping[str, str], name: str) -> SecretStr | None:
    """A key named by a TOML table's `api_key_env`, checked as the settings' own secrets are."""
    value = environ.get(name, "")
    if not value:
        return None
    try:
        _check_one_visible_line(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}.") from None
    return SecretStr(value)


def _secret_candidates(environ: Mapping[str, str]) -> list[str]:
    """Values that may be secret before the settings exist: to mask them in a configuration error."""
    return [v for k, v in environ.items() if k.upper().endswith(_SECRET_SUFFIXES) and len(v) >= 8]


def load_settings(flags: Mapping[str, str | None], environ: Mapping[str, str]) -> Settings:
    """Validate the flags (`dest` -> value, None when not given) and environment into `Settings`.

    Raises `ConfigError` (one line naming the setting and the fix, every secret masked) and
    nothing else.
    """
    masked = _secret_candidates(environ)
    try:
        raw: dict[str, Any] = {}
        for o in OPTIONS:
            value = flags.get(o.dest)
            if value is None:
                value = environ.get(o.env)
            if value is None or not value.strip():
                continue
            raw[o.dest] = value if o.secret else value.strip()
        for secret, file in (("api_key", "api_key_file"), ("auth_token", "auth_token_file")):
            if file in raw:
                raw[secret] = _read_secret_file(raw[file], file)
                masked.append(raw[secret])
            elif secret in raw:
                masked.append(raw[secret])
        try:
            return Settings.model_validate(raw, context={"environ": environ})
        except ValidationError as exc:
            raise _config_error(exc) from None
    except ConfigError as exc:
        raise ConfigError(Redactor(masked).text(str(exc))) from None


def _config_error(exc: ValidationError) -> ConfigError:
    """The first problem pydantic found, as one line naming the setting (its value unless secret)."""
    error = exc.errors()[0]
    dest = str(error["loc"][0]) if error["loc"] else ""
    option = OPTION_BY_DEST.get(dest)
    message = str(error["msg"]).removeprefix("Value error, ")
    if option is None:
        return ConfigError(message)
    if option.secret:
        return ConfigError(f"{option.setting}: {message}.")
    value = error["input"]
    hint = {
        "timeout": "a positive number of seconds (e.g. 60)",
        "deadline": "a positive number of seconds (e.g. 50)",
        "max_retries": "a whole number from 0 to 10",
        "port": "a whole number from 0 to 65535",
        "upstream_connections": "a whole number from 1 to 100000",
        "max_connections": "a whole number from 1 to 65535",
        "max_sessions": "a whole number from 1 to 100000",
        "header_timeout": "a positive number of seconds (e.g. 10)",
        "session_idle_timeout": "a positive number of seconds (e.g. 600)",
        "stateless": "true or false",
        "transport": "'stdio' or 'http'",
        "log_format": "'text' or 'json'",
        "log_level": "debug, info, warning or error",
    }.get(dest)
    if hint is not None:
        return ConfigError(f"{option.setting}: {str(value)!r} is not {hint}.")
    return ConfigError(f"{option.setting}: {message}.")


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


def _check_exposure(s: Settings) -> None:
    """HTTP beyond this machine spends the account's key for whoever reaches it: demand a token."""
    if s.auth_token is None:
        if s.host not in LOOPBACK_HOSTS:
            raise ConfigError(
                f"{OPTION_BY_DEST['host'].setting} = {s.host!r} exposes the server beyond this machine, and anyone "
                "who reaches it spends your API key: set GGUF_MCP_AUTH_TOKEN (or --auth-token-file) to a long random "
                "token, or bind 127.0.0.1."
            )
        public = [h for h in s.allowed_hosts if not _is_loopback_host(h)]
        if public:
            raise ConfigError(
                f"{OPTION_BY_DEST['allowed_hosts'].setting} names {public[0]!r}: a reverse proxy makes the server "
                "reachable beyond this machine, and anyone who reaches it spends your API key. Set GGUF_MCP_AUTH_TOKEN "
                "(or --auth-token-file) to a long random token."
            )
    elif len(s.auth_token.get_secret_value()) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"GGUF_MCP_AUTH_TOKEN is {len(s.auth_token.get_secret_value())} characters; use at least "
            f"{MIN_TOKEN_LENGTH} random ones, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'."
        )
