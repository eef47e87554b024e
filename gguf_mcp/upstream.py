"""HTTP to the deployments: one pooled client, the right auth per protocol, one retry policy.

The client is aiohttp, chosen by measurement (benchmarks/http_clients.py): a request costs a
third of httpx's CPU, which is most of what a bridge adds to a call. Its import (~90 ms, 9 MiB)
waits for the first upstream request and runs on a worker thread: a server that is started but
never used (clients start every configured server) stays small and starts fast, and the event
loop keeps serving meanwhile.

Knows nothing about MCP. Every request goes to a configured deployment's root plus one of the
fixed routes below, so no tool argument can steer a request anywhere else.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import logging
import os
import random
import ssl
import time
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import anyio

from gguf_mcp import __version__
from gguf_mcp.config import Deployment, Settings
from gguf_mcp.errors import (
    ConfigError,
    TransportFailure,
    UpstreamError,
    error_for_status,
    error_for_transport,
    invalid_response,
    redact,
    stream_broken,
    stream_error,
    too_large,
)
from gguf_mcp.streams import EventTooLarge, sse_events

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

MODELS = "/v1/models"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
MESSAGES = "/v1/messages"
ANTHROPIC_VERSION = "2023-06-01"
# Far above any real answer (a context's worth of text, or ~700 embeddings of 4096 floats), far
# below what would hurt the process: an endless or hostile body is cut off, not buffered.
MAX_BODY = 32 * 1024 * 1024
MAX_EVENT = 1024 * 1024
MAX_ERROR_BODY = 64 * 1024
USER_AGENT = f"gguf-mcp/{__version__}"


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before resending a failed request.

    Only failures that can heal are retried (`UpstreamError.retryable`: not ready, restarting,
    rate limited, unreachable). Waits use exponential backoff with full jitter, honour the
    server's Retry-After up to `max_delay`, and never push the total past `max_total`.
    """

    max_retries: int
    base_delay: float = 0.5
    max_delay: float = 10.0
    max_total: float = 60.0

    def delay(self, attempt: int, error: UpstreamError, elapsed: float) -> float | None:
        """Seconds to wait before retry number `attempt + 1`, or None to give up."""
        if not error.retryable or attempt >= self.max_retries:
            return None
        wait = random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))  # noqa: S311 - jitter
        if error.retry_after is not None:
            if error.retry_after > self.max_delay:
                return None  # asked to wait longer than we would: report it now, with the wait
            wait = max(wait, error.retry_after)
        if elapsed + wait > self.max_total:
            return None
        return wait


def _failure(exc: BaseException) -> tuple[TransportFailure, str]:
    """What kind of transport failure an aiohttp exception is, and its text for the agent."""
    import aiohttp

    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "connect timeout", detail
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):  # nothing read for `sock_read` s
        return "read timeout", detail
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "certificate", detail
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect", detail
    return "dropped", detail


def _stale(exc: BaseException) -> bool:
    """A kept-alive connection the server had closed, found while sending: no answer was started.

    llama-server closes one after a streamed answer and after 100 requests without saying so;
    aiohttp does not probe a pooled connection before reusing it, so the next request fails at
    once with ServerDisconnectedError or, mid-write, ClientOSError.
    """
    import aiohttp

    return isinstance(exc, aiohttp.ServerDisconnectedError) or (
        isinstance(exc, aiohttp.ClientOSError) and not isinstance(exc, aiohttp.ClientConnectorError)
    )


@dataclass(frozen=True)
class _Proxy:
    url: str
    headers: dict[str, str] | None = field(repr=False)  # Proxy-Authorization (the URL's credentials), CONNECT only


def _proxy(url: str) -> _Proxy | None:
    """The proxy for `url`: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY and NO_PROXY (or the system settings).

    Resolved once per deployment: aiohttp's own `trust_env` would also look up ~/.netrc on a
    worker thread for every request.
    """
    parts = urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy:
        return None
    found = urlsplit(proxy)
    if found.scheme not in ("http", "https"):
        raise ConfigError(
            f"The proxy set for {parts.scheme} in the environment uses {found.scheme}://, which gguf-mcp "
            "does not support. Use an http:// or https:// proxy, or add the deployment's host to NO_PROXY."
        )
    if found.username is None:
        return _Proxy(proxy, None)
    credentials = f"{unquote(found.username)}:{unquote(found.password or '')}"
    netloc = found.netloc.rpartition("@")[2]
    return _Proxy(
        found._replace(netloc=netloc).geturl(),
        {"proxy-authorization": "Basic " + base64.b64encode(credentials.encode()).decode()},
    )


def _tls_context() -> ssl.SSLContext:
    """Verifying TLS with SSL_CERT_FILE / SSL_CERT_DIR when set, else certifi's CA bundle, as httpx
    does: the system store is empty on some machines (python.org builds on macOS, slim images)."""
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if not (cafile or capath):
        import certifi

        cafile = certifi.where()
    return ssl.create_default_context(cafile=cafile, capath=capath)


def _load(https: bool) -> tuple[Any, ssl.SSLContext | bool]:
    """aiohttp, and the TLS context when a deployment is HTTPS (True: aiohttp's, never used)."""
    return importlib.import_module("aiohttp"), _tls_context() if https else True


class UpstreamClient:
    """Sends requests to deployments and returns their parsed JSON, or raises `UpstreamError`."""

    def __init__(self, settings: Settings, retry: RetryPolicy | None = None) -> None:
        self._settings = settings
        self._timeout = settings.timeout
        self._retry = retry or RetryPolicy(settings.max_retries)
        self._secrets = settings.secrets
        self._secret_bytes = tuple(secret.encode() for secret in settings.secrets)
        self._http: aiohttp.ClientSession | None = None
        self._opening = anyio.Lock()
        self._errors: tuple[type[BaseException], ...] = ()  # what aiohttp raises, once it is loaded
        # Built once: the hot path only looks these up.
        self._proxies: dict[str, _Proxy | ConfigError | None] = {}
        for dep in settings.deployments.values():
            try:
                self._proxies[dep.name] = _proxy(dep.base_url)
            except ConfigError as exc:  # reported on every call to this deployment, and by doctor
                self._proxies[dep.name] = exc
        self._headers: dict[tuple[str, bool], dict[str, str]] = {}
        for dep in settings.deployments.values():
            key = dep.api_key.get_secret_value() if dep.api_key else None
            self._headers[(dep.name, False)] = {"authorization": f"Bearer {key}"} if key else {}
            anthropic = {"anthropic-version": ANTHROPIC_VERSION}
            self._headers[(dep.name, True)] = {"x-api-key": key, **anthropic} if key else anthropic
            proxy = self._proxies[dep.name]
            if isinstance(proxy, _Proxy) and proxy.headers and not dep.base_url.startswith("https:"):
                # A plain-HTTP request goes to the proxy itself, so its credentials ride along
                # (aiohttp sends proxy_headers only on a CONNECT); the proxy strips them.
                for protocol in (False, True):
                    self._headers[(dep.name, protocol)] |= proxy.headers
                self._proxies[dep.name] = _Proxy(proxy.url, None)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def open(self) -> None:
        """Load the HTTP client now rather than with the first request (which it would delay)."""
        await self._session()

    async def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            async with self._opening:  # concurrent first calls open one session
                if self._http is not None:
                    return self._http
                https = any(d.base_url.startswith("https:") for d in self._settings.deployments.values())
                aiohttp, tls = await anyio.to_thread.run_sync(_load, https)
                # connect: waiting for a pooled connection plus connecting; sock_read: the read
                # time-out. There is no write time-out; a request body is one JSON document.
                timeout = aiohttp.ClientTimeout(
                    total=None, connect=30.0, sock_connect=10.0, sock_read=self._settings.timeout
                )
                connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=30.0, ssl=tls)
                self._errors = (aiohttp.ClientError, asyncio.TimeoutError)  # not builtin TimeoutError on 3.10
                self._http = aiohttp.ClientSession(
                    connector=connector, timeout=timeout, headers={"user-agent": USER_AGENT}
                )
        return self._http

    async def get(self, deployment: Deployment, route: str) -> Any:
        return await self._json(deployment, await self._send(deployment, "GET", route, None))

    async def post(self, deployment: Deployment, route: str, body: dict[str, Any]) -> Any:
        return await self._json(deployment, await self._send(deployment, "POST", route, body))

    async def stream(self, dep: Deployment, route: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """POST with `stream: true` and yield each event's JSON until the protocol's final event.

        Retries happen only before the answer starts (never once tokens are flowing). A stream
        that breaks, stalls past the read time-out or ends without `[DONE]`/`message_stop`
        raises; closing the generator (caller cancelled, deadline) closes the upstream
        connection, which is what makes llama-server stop generating.
        """
        body = {**body, "stream": True}
        if route in (CHAT, COMPLETIONS):
            body["stream_options"] = {"include_usage": True}
        response = await self._send(dep, "POST", route, body)
        final = False
        try:
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                sample = await self._read(dep, response, MAX_ERROR_BODY, truncate=True)
                raise invalid_response(
                    dep.name, "a body that is not an event stream", sample, content_type, self._secrets
                )
            async for kind, data_text in sse_events(self._capped(dep, response), MAX_EVENT):
                if final:
                    continue  # read to the end: a fully read response returns its connection to the pool
                if data_text == "[DONE]":
                    final = True
                    continue
                if self._secrets and any(secret in data_text for secret in self._secrets):
                    data_text = redact(data_text, self._secrets)
                try:
                    data = json.loads(data_text)
                except ValueError:
                    raise invalid_response(
                        dep.name, "an event that is not JSON", data_text.encode(), content_type, self._secrets
                    ) from None
                if not isinstance(data, dict):
                    raise invalid_response(
                        dep.name, "an event that is not a JSON object", data_text.encode(), content_type, self._secrets
                    )
                if kind == "error" or data.get("type") == "error" or ("error" in data and "choices" not in data):
                    raise stream_error(dep.name, data, self._secrets)
                yield data
                if data.get("type") == "message_stop":
                    final = True
        except EventTooLarge:
            raise too_large(dep.name, MAX_EVENT, "one streamed event") from None
        except self._errors as exc:
            raise stream_broken(dep.name, *_failure(exc), self._timeout) from None
        finally:
            # Read to the end: back to the pool. Cut short (cancelled, deadline, error): closing
            # the connection is what makes llama-server stop generating.
            if final:
                response.release()
            else:
                response.close()
        if not final:
            raise stream_broken(dep.name, None, "", self._timeout)

    async def _send(
        self, dep: Deployment, method: str, route: str, body: dict[str, Any] | None
    ) -> aiohttp.ClientResponse:
        """Send until a non-error status or the retry policy gives up; the body is left unread."""
        http = await self._session()
        url = dep.base_url + route
        proxy = self._proxies[dep.name]
        if isinstance(proxy, ConfigError):
            raise ConfigError(str(proxy))
        proxy_url, proxy_headers = (proxy.url, proxy.headers) if proxy else (None, None)
        headers = self._headers[(dep.name, route == MESSAGES)]
        content = json.dumps(body).encode() if body is not None else None
        if content is not None:
            headers = {**headers, "content-type": "application/json"}
        started = time.monotonic()
        attempt = 0
        resent_stale = False
        while True:
            try:
                response = await http.request(
                    method, url, data=content, headers=headers, proxy=proxy_url, proxy_headers=proxy_headers
                )
            except self._errors as exc:
                # llama-server closes kept-alive connections without saying so, found dead while
                # sending: resend once, at once. Only then: a request whose answer had started
                # may have run on the GPU.
                if not resent_stale and _stale(exc):
                    resent_stale = True
                    attempt += 1
                    continue
                error: UpstreamError = error_for_transport(dep.name, dep.base_url, *_failure(exc), self._timeout)
            else:
                if log.isEnabledFor(logging.DEBUG):
                    log.debug(  # the logging filter redacts secrets, even a key a proxy echoes back
                        "%s %s on %r: HTTP %d %s",
                        method,
                        route,
                        dep.name,
                        response.status,
                        list(response.headers.items()),
                    )
                if response.status < 400:
                    return response
                try:
                    body_bytes = await self._read(dep, response, MAX_ERROR_BODY, truncate=True)
                except self._errors:
                    body_bytes = b""
                finally:
                    if response.content.at_eof():  # read to the end: back to the pool for the retry
                        response.release()
                    else:
                        response.close()
                error = error_for_status(
                    dep.name,
                    dep.key_env,
                    response.status,
                    body_bytes,
                    response.headers.get("retry-after"),
                    self._secrets,
                )
            wait = self._retry.delay(attempt, error, time.monotonic() - started)
            if wait is None:
                error.attempts = attempt + 1
                raise error
            log.warning(
                "%s %s on %r failed (%s); retrying in %.1f s", method, route, dep.name, type(error).__name__, wait
            )
            await anyio.sleep(wait)
            attempt += 1

    async def _capped(self, dep: Deployment, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """The body's chunks, refusing more than MAX_BODY bytes in all (an endless answer)."""
        total = 0
        async for chunk in response.content.iter_any():
            total += len(chunk)
            if total > MAX_BODY:
                raise too_large(dep.name, MAX_BODY, "an answer")
            yield chunk

    async def _read(
        self, dep: Deployment, response: aiohttp.ClientResponse, cap: int, *, truncate: bool = False
    ) -> bytes:
        """The whole body, at most `cap` bytes: past it, cut (error bodies) or refuse (answers)."""
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.content.iter_any():
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                if truncate:
                    break
                raise too_large(dep.name, cap, "an answer")
        return b"".join(chunks)[:cap]

    async def _json(self, dep: Deployment, response: aiohttp.ClientResponse) -> Any:
        complete = False
        try:
            content = await self._read(dep, response, MAX_BODY)
            complete = True
        except self._errors as exc:
            raise error_for_transport(dep.name, dep.base_url, *_failure(exc), self._timeout) from None
        finally:
            if complete:
                response.release()  # read to the end: the connection goes back to the pool
            else:
                response.close()
        # Redact by value before anything reads it: a deployment echoing the key must not hand
        # it to the agent. A bytes search is cheap enough to do on every answer.
        if self._secret_bytes and any(secret in content for secret in self._secret_bytes):
            content = redact(content.decode("utf-8", "replace"), self._secrets).encode()
        try:
            return json.loads(content)
        except ValueError:
            raise invalid_response(
                dep.name, "a body that is not JSON", content, response.headers.get("content-type"), self._secrets
            ) from None


@asynccontextmanager
async def open_upstream(settings: Settings) -> AsyncIterator[UpstreamClient]:
    """The process-wide pooled client: opened in the server lifespan, closed at shutdown."""
    client = UpstreamClient(settings)
    try:
        yield client
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()
