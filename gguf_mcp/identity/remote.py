"""Talking to the authorization server: small JSON documents over HTTPS, and what its absence costs.

Every fetch (metadata, JWKS, introspection) goes through `fetch_json`, which turns any failure
into `IssuerUnavailable` naming the URL and what went wrong. A down issuer is reported by
`OutageLog`: one warning line a minute at most, however many requests it refuses, and one line
when it answers again. `issuer_outage` tells the HTTP layer that a refusal was the issuer's
fault, not the token's (it can answer 503 rather than 401).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote_plus

import httpx2

from gguf_mcp import __version__
from gguf_mcp.bodies import cut, plain
from gguf_mcp.errors import GGUFMCPError

log = logging.getLogger("gguf_mcp.identity")

Clock = Callable[[], float]

DOCUMENT_LIMIT = 1 << 20
"""The most bytes of one metadata, JWKS or introspection answer read (real ones are a few kB)."""
TIMEOUT_S = 5.0
"""Per request to the authorization server: a request waiting on it waits at most this long."""
OUTAGE_LOG_INTERVAL_S = 60.0

issuer_outage: ContextVar[str | None] = ContextVar("gguf_mcp_issuer_outage", default=None)
"""Set (to the authorization server's URL) when this request's token was refused because that
server could not be asked: the token may be fine, so the answer should be 503, not 401."""


class IssuerUnavailable(GGUFMCPError):
    """The authorization server (metadata, keys or introspection) could not be asked; no token is accepted."""

    label = "issuer unreachable"


class Throttle:
    """Lets one event through per `interval` seconds."""

    def __init__(self, interval: float, clock: Clock = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._last: float | None = None

    def allow(self) -> bool:
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return False
        self._last = now
        return True


class OutageLog:
    """One warning a minute while `source` fails; one more when it answers again (whoever saw the first sees it)."""

    def __init__(self, source: str, clock: Clock = time.monotonic) -> None:
        self._source = source
        self._throttle = Throttle(OUTAGE_LOG_INTERVAL_S, clock)
        self._failing = False

    def failed(self, error: IssuerUnavailable, consequence: str) -> None:
        self._failing = True
        if self._throttle.allow():
            log.warning("Authorization server %s: %s; %s (logged once a minute)", self._source, error, consequence)

    def answered(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("Authorization server %s answers again", self._source)


def open_identity_client() -> httpx2.AsyncClient:
    """The client for the authorization server: the environment's proxies and CA bundle, no redirects."""
    return httpx2.AsyncClient(
        timeout=TIMEOUT_S,
        headers={"user-agent": f"gguf-mcp/{__version__}", "accept": "application/json"},
        follow_redirects=False,  # a document's URL is part of what is trusted: never fetch it elsewhere
        trust_env=True,
    )


class IssuerHTTP:
    """The HTTP client of the identity checks: given (and closed by its owner), or opened on first use."""

    def __init__(self, http: httpx2.AsyncClient | None = None) -> None:
        self._given = http
        self._own: httpx2.AsyncClient | None = None

    @property
    def client(self) -> httpx2.AsyncClient:
        if self._given is not None:
            return self._given
        if self._own is None:
            # Opened on first use: building its TLS context costs tens of milliseconds at start.
            self._own = open_identity_client()
        return self._own

    async def aclose(self) -> None:
        if self._own is not None:
            await self._own.aclose()
            self._own = None


async def fetch_json(
    http: httpx2.AsyncClient,
    url: str,
    *,
    form: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
) -> tuple[int, Any]:
    """GET `url` (POST `form` when given) and parse its JSON answer; any failure is `IssuerUnavailable`.

    Returns the status with the parsed body for 200, and with None for a 4xx (a caller may try
    another URL); anything else (no answer, 3xx, 5xx, a body that is not JSON) raises.
    """
    try:
        request = http.build_request("POST" if form is not None else "GET", url, data=form)
        if auth is not None:
            request.headers["authorization"] = basic_credentials(*auth)
        response = await http.send(request, stream=True)
        try:
            body = await _read_capped(response)
        finally:
            await response.aclose()
    except httpx2.HTTPError as exc:
        detail = cut(plain(str(exc)), 200)
        raise IssuerUnavailable(f"{url} could not be reached ({type(exc).__name__}: {detail})") from None
    if 400 <= response.status_code < 500:
        return response.status_code, None
    if response.status_code != 200:
        raise IssuerUnavailable(f"{url} answered HTTP {response.status_code}")
    try:
        return 200, json.loads(body)
    except ValueError:
        raise IssuerUnavailable(f"{url} answered 200 with a body that is not JSON") from None


def basic_credentials(client_id: str, secret: str) -> str:
    """RFC 6749 section 2.3.1: each part form-encoded before base64 (httpx's BasicAuth skips that step)."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


async def _read_capped(response: httpx2.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > DOCUMENT_LIMIT:
            raise IssuerUnavailable(f"{response.request.url} answered more than {DOCUMENT_LIMIT} bytes")
    return bytes(body)
