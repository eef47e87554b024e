"""Settings: one validated pydantic model of everything the server needs.

Every field users set carries its environment variable, flag and help text (`setting()`); `--help`,
the README table and `server.json` are all derived from those fields (`OPTIONS`). The fields below
them (deployments, clients) are derived at load (`loading.py`) from these and the GGUF_MCP_CONFIG
file. Validators here check one value each and raise ValueError; rules across settings are in
`checks.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
)

from gguf_mcp.clients import Client, ClientPolicy
from gguf_mcp.config.options import Option, options_of, setting
from gguf_mcp.config.sources import check_one_visible_line, expand_user
from gguf_mcp.config.urls import GGUF_CLOUD_ROOT, oauth_url

DEFAULT_KEY_ENV = "MODELSLAB_API_KEY"
TOOL_NAMES = ("list_models", "chat", "messages", "complete", "embed")
MIN_TOKEN_LENGTH = 32


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
    max_concurrency: int | None = None
    """Generations it runs at once, from its TOML table (overrides llama-server's /props total_slots)."""


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
        "TOML file naming several deployments and the clients (see README); its deployments replace "
        "GGUF_DEPLOYMENT_ID and GGUF_BASE_URL.",
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
        "HTTP bind address (default 127.0.0.1). Any other address requires GGUF_MCP_AUTH_TOKEN, named clients or "
        "OAuth.",
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
    oauth_issuer: str | None = setting(
        None,
        "GGUF_MCP_OAUTH_ISSUER",
        "--oauth-issuer",
        "Issuer URL of the OAuth authorization server HTTP clients sign in at (e.g. Claude's connectors); https. "
        "Needs GGUF_MCP_PUBLIC_URL; then no GGUF_MCP_AUTH_TOKEN is needed.",
        metavar="URL",
    )
    public_url: str | None = setting(
        None,
        "GGUF_MCP_PUBLIC_URL",
        "--public-url",
        "This server's public URL, e.g. https://mcp.example.com/mcp: the resource access tokens must be issued "
        "for (their audience). Its host is accepted as a Host header.",
        metavar="URL",
    )
    oauth_introspection_url: str | None = setting(
        None,
        "GGUF_MCP_OAUTH_INTROSPECTION_URL",
        "--oauth-introspection-url",
        "Token introspection endpoint (RFC 7662), for authorization servers that issue opaque access tokens; "
        "needs GGUF_MCP_OAUTH_CLIENT_FILE.",
        metavar="URL",
    )
    oauth_client_file: Path | None = setting(
        None,
        "GGUF_MCP_OAUTH_CLIENT_FILE",
        "--oauth-client-file",
        "File holding the introspection client's id (first line) and secret (second line).",
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
    audit_log: str | None = setting(
        None,
        "GGUF_MCP_AUDIT_LOG",
        "--audit-log",
        "Append one JSON line per finished call (client, deployment, tool, tokens, times, outcome; never prompt "
        "or output) to this file, or - for stderr.",
        metavar="PATH",
        file=True,
    )

    # Read from GGUF_MCP_OAUTH_CLIENT_FILE, not set directly.
    introspection_client_id: str | None = None
    introspection_client_secret: SecretStr | None = None

    # Derived at load (loading.py) from the settings above and the GGUF_MCP_CONFIG file.
    deployments: Mapping[str, Deployment] = Field(default_factory=dict, exclude=True)
    default_deployment: str = Field("", exclude=True)
    clients: Mapping[str, Client] = Field(default_factory=dict, exclude=True)
    """Every client by name, `default` (GGUF_MCP_AUTH_TOKEN's, whose limits also apply over stdio) included."""
    client_defaults: ClientPolicy = Field(default_factory=ClientPolicy, exclude=True)
    """The policy of an OAuth client that no `[clients.<name>]` table names."""

    @field_validator("api_key", "auth_token", "introspection_client_secret")
    @classmethod
    def _one_visible_line(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_one_visible_line(value.get_secret_value())
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

    @field_validator("oauth_issuer", "public_url", "oauth_introspection_url")
    @classmethod
    def _oauth_url(cls, url: str | None) -> str | None:
        return None if url is None else oauth_url(url)

    @field_validator("audit_log")
    @classmethod
    def _appendable(cls, target: str | None) -> str | None:
        if target is None or target == "-":
            return target
        path = expand_user(Path(target))
        try:
            is_dir, parent_missing = path.is_dir(), not path.parent.is_dir()
        except OSError:  # a name the file system refuses (too long): opening it at start says why, in one line
            return str(path)
        if is_dir:
            raise ValueError(f"{target!r} is a directory; name a file to append to (or - for stderr)")
        if parent_missing:
            raise ValueError(f"the directory of {target!r} does not exist; create it first (or use - for stderr)")
        return str(path)

    @property
    def auth_required(self) -> bool:
        """Whether HTTP requests must carry a credential: a static token, a named client's, or OAuth."""
        named = any(c.token_sha256 for c in self.clients.values())
        return self.auth_token is not None or self.oauth_issuer is not None or named

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value this process holds: the deployments' keys, the clients' token, OAuth's secret."""
        found = [d.api_key for d in self.deployments.values()]
        found += [self.auth_token, self.introspection_client_secret]
        return tuple(dict.fromkeys(s.get_secret_value() for s in found if s is not None))


OPTIONS: tuple[Option, ...] = options_of(Settings)
"""Every user-facing setting, in declaration order: what `--help`, the README and server.json list."""
OPTION_BY_DEST = {o.dest: o for o in OPTIONS}
