"""Configuration: one validated settings model, read once at start-up from flags, environment and files.

The rooms: `options` (how a setting is declared and named), `settings` (the model and its
`OPTIONS`), `sources` (reading files and variables), `urls`, `files` (the GGUF_MCP_CONFIG file's
tables), `deployments` and `policies` (what those tables build), `checks` (rules over the whole),
`loading` (`load_settings`, `reload_clients`) and `tokens` (`gguf-mcp token new`).
"""

from gguf_mcp.config.loading import load_settings, reload_clients
from gguf_mcp.config.options import Option
from gguf_mcp.config.settings import (
    DEFAULT_KEY_ENV,
    MIN_TOKEN_LENGTH,
    OPTION_BY_DEST,
    OPTIONS,
    TOOL_NAMES,
    Deployment,
    Settings,
)
from gguf_mcp.config.tokens import new_client_token
from gguf_mcp.config.urls import GGUF_CLOUD_ROOT, LOOPBACK_HOSTS, deployment_url, normalize_base_url

__all__ = [
    "DEFAULT_KEY_ENV",
    "GGUF_CLOUD_ROOT",
    "LOOPBACK_HOSTS",
    "MIN_TOKEN_LENGTH",
    "OPTIONS",
    "OPTION_BY_DEST",
    "TOOL_NAMES",
    "Deployment",
    "Option",
    "Settings",
    "deployment_url",
    "load_settings",
    "new_client_token",
    "normalize_base_url",
    "reload_clients",
]
