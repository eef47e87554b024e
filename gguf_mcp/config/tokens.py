"""A new client token and the GGUF_MCP_CONFIG lines that name its client (`gguf-mcp token new`)."""

from __future__ import annotations

import secrets

from gguf_mcp.clients import DEFAULT_CLIENT, hash_token
from gguf_mcp.config.files import TABLE_NAME
from gguf_mcp.errors import ConfigError

TOKEN_BYTES = 32


def new_client_token(name: str) -> tuple[str, str]:
    """A fresh random token for client `name`, and the TOML table to paste (its hash only)."""
    if not TABLE_NAME.match(name) or name == DEFAULT_CLIENT:
        raise ConfigError(
            f"token new: {name[:64]!r} is not a client name: letters, digits, '-', '_' or '.' (at most 64), and "
            f"not {DEFAULT_CLIENT!r} (GGUF_MCP_AUTH_TOKEN's client)."
        )
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, f'[clients.{name}]\ntoken_sha256 = "{hash_token(token)}"\n'
