"""Rules across settings: pairs that go together (before anything is built from them), then, once the
deployments and clients are built, who may reach the server and that no credential does two jobs."""

from __future__ import annotations

import hmac

from pydantic import SecretStr

from gguf_mcp.clients import hash_token
from gguf_mcp.config.policies import token_holder
from gguf_mcp.config.settings import MIN_TOKEN_LENGTH, OPTION_BY_DEST, Settings
from gguf_mcp.config.urls import LOOPBACK_HOSTS, is_loopback_host
from gguf_mcp.errors import ConfigError

_CREDENTIALS = (
    "set GGUF_MCP_AUTH_TOKEN (or --auth-token-file) to a long random token, name clients with tokens in "
    "GGUF_MCP_CONFIG, or set GGUF_MCP_OAUTH_ISSUER"
)


def check_pairs(s: Settings) -> None:
    """Settings that only work together, or only apart: checked before anything is built from them."""
    problem = _one_deployment_source(s) or _oauth_together(s) or _introspection_together(s)
    if problem is not None:
        raise ConfigError(f"{problem}.")


def _one_deployment_source(s: Settings) -> str | None:
    if s.deployment_id and s.base_url:
        o = OPTION_BY_DEST
        return f"Set only one of {o['deployment_id'].setting} or {o['base_url'].setting}, not both"
    return None


def _oauth_together(s: Settings) -> str | None:
    if (s.oauth_issuer is None) == (s.public_url is None):
        return None
    given, missing = ("oauth_issuer", "public_url") if s.public_url is None else ("public_url", "oauth_issuer")
    return (
        f"{OPTION_BY_DEST[given].setting} is set without {OPTION_BY_DEST[missing].setting}: OAuth needs both (the "
        "issuer that signs the tokens and this server's public URL, which they must name)"
    )


def _introspection_together(s: Settings) -> str | None:
    o = OPTION_BY_DEST
    if s.oauth_introspection_url is not None and s.oauth_issuer is None:
        return (
            f"{o['oauth_introspection_url'].setting} needs {o['oauth_issuer'].env} and {o['public_url'].env} too: "
            "it checks the tokens that issuer grants for this server"
        )
    if (s.oauth_introspection_url is None) != (s.oauth_client_file is None):
        return (
            f"{o['oauth_introspection_url'].setting} and {o['oauth_client_file'].setting} go together: the "
            "introspection endpoint only answers its registered client"
        )
    return None


def check_exposure(s: Settings) -> None:
    """HTTP beyond this machine spends the account's key for whoever reaches it: demand a credential."""
    if s.transport != "http":
        return
    _check_token_length(s)
    if s.auth_required:
        return
    if s.host not in LOOPBACK_HOSTS:
        raise ConfigError(
            f"{OPTION_BY_DEST['host'].setting} = {s.host!r} exposes the server beyond this machine, and anyone "
            f"who reaches it spends your API key: {_CREDENTIALS}; or bind 127.0.0.1."
        )
    public = [h for h in s.allowed_hosts if not is_loopback_host(h)]
    if public:
        raise ConfigError(
            f"{OPTION_BY_DEST['allowed_hosts'].setting} names {public[0]!r}: a reverse proxy makes the server "
            f"reachable beyond this machine, and anyone who reaches it spends your API key: {_CREDENTIALS}."
        )


def _check_token_length(s: Settings) -> None:
    length = len(s.auth_token.get_secret_value()) if s.auth_token is not None else MIN_TOKEN_LENGTH
    if length < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"GGUF_MCP_AUTH_TOKEN is {length} characters; use at least {MIN_TOKEN_LENGTH} random ones, e.g. "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'."
        )


def check_credentials_apart(s: Settings) -> None:
    """No deployment key is a client credential: it would be sent upstream with every request."""
    credentials = _client_credentials(s)
    for deployment in s.deployments.values():
        owner = _credential_owner(deployment.api_key, credentials)
        if owner is not None:
            raise ConfigError(
                f"{deployment.key_env}, the key of deployment {deployment.name!r}, is also a client credential "
                f"({owner}): the deployment would receive it. Give the deployment a key of its own."
            )


def _credential_owner(key: SecretStr | None, credentials: list[tuple[str, str]]) -> str | None:
    if key is None:
        return None
    digest = hash_token(key.get_secret_value())
    return next((what for what, other in credentials if hmac.compare_digest(digest, other)), None)


def _client_credentials(s: Settings) -> list[tuple[str, str]]:
    """Each client credential's SHA-256 in hex, with the setting that holds it (never its value)."""
    found = [(token_holder(c.name), c.token_sha256) for c in s.clients.values() if c.token_sha256 is not None]
    if s.introspection_client_secret is not None:
        secret = s.introspection_client_secret.get_secret_value()
        found.append((OPTION_BY_DEST["oauth_client_file"].env, hash_token(secret)))
    return found
