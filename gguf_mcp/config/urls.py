"""URLs and host names: the deployments' roots in every form users paste, and the OAuth URLs.

A deployment URL is normalised to its root (with or without `/v1`, any trailing slash). An OAuth
URL (issuer, public URL, introspection endpoint) is kept exactly as given, since tokens name it
verbatim, and must be https unless it points at this machine.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import SplitResult, urlsplit

from gguf_mcp.errors import ConfigError

GGUF_CLOUD_ROOT = "https://modelslab.com/api/gguf"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

_DEPLOYMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def _url_problem(parts: SplitResult) -> str | None:
    """What makes a URL unusable as a base: shared by deployment and OAuth URLs (never quotes it)."""
    if parts.username or parts.password:
        return "the URL must not carry credentials (user:password@); a key goes in its own variable"
    if parts.query or parts.fragment:
        # Not quoted: a query string is where people paste keys.
        return "the URL has a query or fragment (?... or #...); give it without them"
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return "the URL has an invalid port"
    return None


def _split(url: str) -> SplitResult | None:
    """`url` in parts, or None when it does not parse (e.g. an unclosed IPv6 bracket)."""
    try:
        return urlsplit(url)
    except ValueError:
        return None


def normalize_base_url(raw: str, setting: str) -> str:
    """Return the deployment root for any URL form users paste: root or `/v1`, any trailing slash."""
    url = raw.strip()
    parts = _split(url)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{setting}: {raw!r} is not an http(s) URL. Use e.g. {GGUF_CLOUD_ROOT}/<deployment_id> or "
            "http://127.0.0.1:8080 for a local llama-server."
        )
    problem = _url_problem(parts)
    if problem is not None:
        raise ConfigError(f"{setting}: {problem}.")
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


def needs_key(base_url: str) -> bool:
    """Whether the deployment is on GGUF Cloud, which always wants the account's key."""
    return base_url.startswith(GGUF_CLOUD_ROOT + "/")


def oauth_url(raw: str) -> str:
    """An OAuth URL, checked and kept as given: https, or http to this machine only. Raises ValueError."""
    url = raw.strip()
    parts = _split(url)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    problem = _url_problem(parts)
    if problem is not None:
        raise ValueError(problem)
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(f"{url!r} must use https (plain http only to this machine: 127.0.0.1, ::1, localhost)")
    return url


def public_host(url: str) -> str | None:
    """The Host a request to `url` carries, as GGUF_MCP_ALLOWED_HOSTS lists it (any port), unless loopback."""
    name = urlsplit(url).hostname or ""
    if is_loopback_host(name):
        return None
    return f"[{name}]" if ":" in name else name


def is_loopback_host(host: str) -> bool:
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
