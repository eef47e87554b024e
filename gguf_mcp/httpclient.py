"""The process's one pooled HTTP client to the deployments, built when the first request needs it.

The client is `httpx2`, the maintained line of httpx that the MCP SDK already installs and
imports. It brings what a well-behaved HTTP client owes its user from the environment
(`trust_env`): HTTPS_PROXY / HTTP_PROXY / ALL_PROXY with credentials, NO_PROXY, SSL_CERT_FILE /
SSL_CERT_DIR and the system's CA store. Redirects are never followed: a deployment answering
3xx would otherwise receive, elsewhere, the key and the prompt.

Building it costs about 40 ms (half of it loading the CA store into a TLS context): a server
that a client starts, lists and maybe never calls should not pay that before its first answer.
So `Pool` checks at start what would make the client fail (a proxy it cannot use, a CA file or
directory that is not there: one line, exit 2) and builds the client on the first request.
"""

from __future__ import annotations

import os
import ssl
import urllib.request
from types import TracebackType
from urllib.parse import urlsplit

import httpx2

from gguf_mcp import __version__
from gguf_mcp.config import Settings
from gguf_mcp.errors import tls_settings_unusable, unsupported_proxy

USER_AGENT = f"gguf-mcp/{__version__}"
CONNECT_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 30.0
HEADERS = {
    "accept": "*/*",
    "accept-encoding": "gzip, deflate",
    "connection": "keep-alive",
    "user-agent": USER_AGENT,
}
"""What every request carries besides its own headers (what httpx's client adds by default)."""


def timeouts(settings: Settings) -> httpx2.Timeout:
    return httpx2.Timeout(
        connect=CONNECT_TIMEOUT_S,
        read=settings.timeout,
        write=WRITE_TIMEOUT_S,
        # Waiting for a free connection is queueing, not failing: as long as a generation may take.
        pool=settings.timeout,
    )


def check_environment() -> None:
    """What would make the client fail later, as a `ConfigError` now: an unsupported proxy scheme
    (socks needs a package gguf-mcp does not install), or SSL_CERT_FILE / SSL_CERT_DIR not there."""
    proxies = urllib.request.getproxies()  # what httpx reads too: *_PROXY, and NO_PROXY as "no"
    schemes = {urlsplit(url).scheme for kind, url in proxies.items() if kind != "no"} - {"http", "https"}
    if schemes:
        raise unsupported_proxy(min(schemes))
    for name, exists in (("SSL_CERT_FILE", os.path.isfile), ("SSL_CERT_DIR", os.path.isdir)):
        value = os.environ.get(name)
        if value and not exists(value):
            raise tls_settings_unusable(name, value, "it does not exist")


def open_http_client(settings: Settings) -> httpx2.AsyncClient:
    """A pooled client for `settings`; raises `ConfigError` for a proxy or TLS setting it cannot use."""
    limits = httpx2.Limits(
        max_connections=settings.upstream_connections,
        max_keepalive_connections=settings.upstream_connections,  # a TLS handshake per call otherwise
        keepalive_expiry=30.0,
    )
    try:
        return httpx2.AsyncClient(
            timeout=timeouts(settings), limits=limits, headers=HEADERS, follow_redirects=False, trust_env=True
        )
    except (ImportError, ValueError):  # a socks proxy (httpx needs socksio), or another scheme
        check_environment()
        raise unsupported_proxy("an unknown scheme") from None
    except (OSError, ssl.SSLError) as exc:  # SSL_CERT_FILE / SSL_CERT_DIR unreadable, or not PEM
        name = "SSL_CERT_FILE" if os.environ.get("SSL_CERT_FILE") else "SSL_CERT_DIR"
        raise tls_settings_unusable(name, os.environ.get(name, ""), str(exc)) from None


class Pool:
    """The pooled client, built by the first `client()`; `async with` closes it if it was."""

    def __init__(self, settings: Settings, http: httpx2.AsyncClient | None = None) -> None:
        """`http`: a client to use instead (tests hand one over `httpx2.MockTransport`)."""
        if http is None:
            check_environment()
        self._settings = settings
        self._http = http

    def client(self) -> httpx2.AsyncClient:
        """The client, built now if it was not yet (`ConfigError` if a TLS setting cannot be used)."""
        if self._http is None:
            self._http = open_http_client(self._settings)
        return self._http

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._http is not None:
            await self._http.aclose()
