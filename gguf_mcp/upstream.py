"""HTTP to the deployments: the right auth per API, one retry policy, answers read within caps.

Requests go through the process's one pooled client (`gguf_mcp.httpclient`: proxies and TLS from
the environment, redirects never followed). Each is built here from what is fixed per deployment
and route (its URL parsed once, its headers), not through the client's `build_request`, which
would merge defaults, cookies and time-outs anew each time.

Knows nothing about MCP, nor any API's particulars: an `Endpoint` (`gguf_mcp.dialects`) says
which route, auth header and stream markers. Every request goes to a configured deployment's root
plus one of those fixed routes, so no tool argument can steer a request anywhere else. What a deployment
sends back is read within size caps and redacted (decoded strings, so escaped echoes too)
before anyone else sees it.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import httpx2

from gguf_mcp.config import Deployment, Settings
from gguf_mcp.dialects import Endpoint
from gguf_mcp.errors import (
    TransportFailure,
    UpstreamError,
    error_for_status,
    error_for_transport,
    invalid_response,
    redirected,
    stream_broken,
    stream_error,
    too_large,
)
from gguf_mcp.httpclient import HEADERS, Pool, timeouts
from gguf_mcp.redaction import Redactor
from gguf_mcp.streams import EventTooLarge, sse_events

log = logging.getLogger(__name__)

# Far above any real answer (a context's worth of text, or ~700 embeddings of 4096 floats), far
# below what would hurt the process: an endless or hostile body is cut off, not buffered.
MAX_BODY = 32 * 1024 * 1024
MAX_EVENT = 1024 * 1024
MAX_ERROR_BODY = 64 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before resending a failed request.

    Only failures that can heal are retried (`UpstreamError.retryable`: not ready, restarting,
    rate limited, unreachable). Waits use exponential backoff with full jitter, honour the
    server's Retry-After up to `max_delay`, and never push the total past `max_total`. The one
    resend of a request whose pooled connection was found dead before any answer is not a
    retry: it spends none of `max_retries` (`UpstreamClient._send`).
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


NO_RETRY = RetryPolicy(0)
STALE_RESEND = "stale connection"
"""The retry reason of the one free resend of a request whose pooled connection was found dead."""


_CLOSED = ("disconnected", "closed connection")
"""How the HTTP parser says the peer hung up (`_failure`): every other complaint of its is about bytes."""
_COMPLAINT = re.compile(r"[A-Za-z][A-Za-z -]{0,60}")


def _not_http(exc: httpx2.TransportError) -> str | None:
    """What the HTTP parser found wrong with an answer that is not HTTP (a malformed status line,
    header or chunk), or None for any other failure. Its words only: the bytes it quotes after
    them may hold anything, the key included."""
    text = str(exc)
    if not isinstance(exc, httpx2.RemoteProtocolError) or any(closed in text for closed in _CLOSED):
        return None
    words = text.partition(":")[0]
    return words if _COMPLAINT.fullmatch(words) else "malformed answer"


_BY_TYPE: tuple[tuple[type[httpx2.TransportError], TransportFailure], ...] = (
    (httpx2.ConnectTimeout, "connect timeout"),
    (httpx2.PoolTimeout, "pool timeout"),
    (httpx2.ReadTimeout, "read timeout"),
    (httpx2.ProxyError, "proxy"),
    (httpx2.ConnectError, "connect"),
)


def _failure(exc: httpx2.TransportError) -> tuple[TransportFailure, str]:
    """What kind of transport failure an httpx exception is, and its text for the agent."""
    complaint = _not_http(exc)
    if complaint is not None:
        return "not http", complaint
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    dropped: TransportFailure = "dropped"
    failure = next((failure for kind, failure in _BY_TYPE if isinstance(exc, kind)), dropped)
    return (_tls_failure(exc) or failure) if failure == "connect" else failure, detail


def _tls_failure(exc: BaseException) -> TransportFailure | None:
    """A connection refused by TLS: the certificate did not verify, or the server does not speak TLS."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "certificate"
        if isinstance(cause, ssl.SSLError) and cause.reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"):
            return "not tls"
        cause = cause.__cause__ or cause.__context__
    return None


def _retry_after(value: str | None) -> float | None:
    """A Retry-After header's seconds; None for none, or an HTTP date (rare on APIs: the backoff applies)."""
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return max(seconds, 0.0) if seconds == seconds else None


def _stale(exc: httpx2.TransportError) -> bool:
    """A kept-alive connection the server had closed, found dead before any response started.

    llama-server closes one after 100 requests and after a streamed answer without saying so.
    """
    return isinstance(exc, httpx2.RemoteProtocolError) and "without sending a response" in str(exc)


class Observer(Protocol):
    """Told of every attempt's outcome and every retry (the metrics: `gguf_mcp.fairshare.Metrics`)."""

    def upstream_response(self, deployment: str, route: str, status: int | str) -> None:
        """An attempt's HTTP status, or how it failed without one (a `TransportFailure`)."""

    def upstream_retry(self, deployment: str, route: str, reason: str) -> None:
        """A request sent again: `reason` is the failed attempt's error label, or `stale connection`."""


class _Unobserved:
    """Nobody listening (a no-op call costs less than a branch per attempt and keeps `_send` simple)."""

    def upstream_response(self, deployment: str, route: str, status: int | str) -> None:
        pass

    def upstream_retry(self, deployment: str, route: str, reason: str) -> None:
        pass


class UpstreamClient:
    """Sends requests to deployments and returns their parsed, redacted JSON, or raises `UpstreamError`.

    `http` is the process's `Pool` (or a client over `httpx2.MockTransport` in tests); whoever
    made it closes it. `redactor` masks the settings' secrets; it is the process's one,
    which the tools and resources also hand to `gguf_mcp.errors.error_text`. `observer` hears
    every attempt and retry.
    """

    def __init__(
        self,
        http: Pool | httpx2.AsyncClient,
        settings: Settings,
        retry: RetryPolicy | None = None,
        *,
        observer: Observer | None = None,
    ) -> None:
        self._pool = http if isinstance(http, Pool) else Pool(settings, http)
        self._extensions = {"timeout": timeouts(settings).as_dict()}
        self._observer: Observer = observer or _Unobserved()
        self._timeout = settings.timeout
        self._retry = retry or RetryPolicy(settings.max_retries)
        self.redactor = Redactor(settings.secrets)
        keys = {d.name: d.api_key.get_secret_value() for d in settings.deployments.values() if d.api_key}
        self._keys = {
            name: {"bearer": {"authorization": f"Bearer {k}"}, "x-api-key": {"x-api-key": k}}
            for name, k in keys.items()
        }
        self._routes: dict[tuple[str, str, bool], tuple[httpx2.URL, dict[str, str]]] = {}

    def _route(self, dep: Deployment, endpoint: Endpoint, body: bool) -> tuple[httpx2.URL, dict[str, str]]:
        """The URL and headers of a request to this deployment and route: built once, then looked up."""
        found = self._routes.get((dep.name, endpoint.route, body))
        if found is None:
            headers = {**HEADERS, **self._keys.get(dep.name, {}).get(endpoint.auth, {}), **endpoint.headers}
            if body:
                headers["content-type"] = "application/json"
            found = httpx2.URL(dep.base_url + endpoint.route), headers
            self._routes[(dep.name, endpoint.route, body)] = found
        return found

    async def get(self, dep: Deployment, endpoint: Endpoint, *, retry: RetryPolicy | None = None) -> Any:
        return await self._json(dep, await self._send(dep, "GET", endpoint, None, retry=retry))

    async def post(
        self, dep: Deployment, endpoint: Endpoint, body: dict[str, Any], *, retry: RetryPolicy | None = None
    ) -> Any:
        return await self._json(dep, await self._send(dep, "POST", endpoint, body, retry=retry))

    async def stream(
        self, dep: Deployment, endpoint: Endpoint, body: dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """POST with `stream: true` and yield each event's JSON until the endpoint's final event.

        Retries happen only before the answer starts (never once tokens are flowing). A stream
        that breaks, stalls past the read time-out or ends without `[DONE]`/`message_stop`
        raises; closing the generator (caller cancelled, deadline) closes the upstream
        connection, which is what makes llama-server stop generating.
        """
        body = {**body, **endpoint.stream_fields, "stream": True}
        response = await self._send(dep, "POST", endpoint, body)
        final = False
        try:
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                sample = await self._read(dep, response, MAX_ERROR_BODY, truncate=True)
                raise invalid_response(
                    dep.name, "a body that is not an event stream", sample, content_type, self.redactor
                )
            async for kind, data_text in sse_events(self._capped(dep, response), MAX_EVENT):
                if final:
                    continue  # read to the end: a fully read response returns its connection to the pool
                if endpoint.ends_with(data_text, None):
                    final = True
                    continue
                data = self._event(dep, kind, data_text, content_type)
                yield data if self.redactor.clean(data_text) else self.redactor.data(data)
                final = endpoint.ends_with(data_text, data)
        except EventTooLarge:
            raise too_large(dep.name, MAX_EVENT, "one streamed event") from None
        except httpx2.TransportError as exc:
            raise stream_broken(dep.name, dep.base_url, *_failure(exc), self._timeout) from None
        finally:
            # Read to the end, the connection goes back to the pool; cut short (cancelled, deadline,
            # error), closing it is what makes llama-server stop generating.
            with anyio.CancelScope(shield=True):
                await response.aclose()
        if not final:
            raise stream_broken(dep.name, dep.base_url, None, "", self._timeout)

    def _event(self, dep: Deployment, kind: str, text: str, content_type: str) -> dict[str, Any]:
        """One event's JSON object, or the error it is (not JSON, not an object, an error event)."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # not JSON, or nested past what the parser can follow
            raise invalid_response(
                dep.name, "an event that is not JSON", text.encode(), content_type, self.redactor
            ) from None
        if not isinstance(data, dict):
            raise invalid_response(
                dep.name, "an event that is not a JSON object", text.encode(), content_type, self.redactor
            )
        if kind == "error" or data.get("type") == "error" or ("error" in data and "choices" not in data):
            raise stream_error(dep.name, data, self.redactor)
        return data

    async def _send(
        self,
        dep: Deployment,
        method: str,
        endpoint: Endpoint,
        body: dict[str, Any] | None,
        *,
        retry: RetryPolicy | None = None,
    ) -> httpx2.Response:
        """Send until a 2xx or the retry policy gives up; the body of the 2xx is left unread.

        A pooled connection found dead before any response gets one resend per call, at once and
        apart from the policy's retries: the request provably never reached the server. Only then:
        a request whose answer had started may have run on the GPU, and one answered with bytes
        that are not HTTP would get the same bytes again. `attempts` counts every request sent.
        """
        content = json.dumps(body).encode() if body is not None else None
        policy = retry or self._retry
        started = time.monotonic()
        retries = sent = 0
        stale_resend = True
        observer = self._observer
        while True:
            sent += 1
            try:
                response = await self._open(dep, method, endpoint, content)
            except httpx2.TransportError as exc:
                failure, detail = _failure(exc)
                observer.upstream_response(dep.name, endpoint.route, failure)
                if stale_resend and _stale(exc):
                    stale_resend = False
                    observer.upstream_retry(dep.name, endpoint.route, STALE_RESEND)
                    continue
                error = error_for_transport(dep.name, dep.base_url, failure, detail, self._timeout)
            else:
                observer.upstream_response(dep.name, endpoint.route, response.status_code)
                if response.status_code < 300:
                    return response
                error = await self._refusal(dep, response)
            wait = policy.delay(retries, error, time.monotonic() - started)
            if wait is None:
                error.attempts = sent
                raise error
            log.warning(
                "%s %s on %r failed (%s); retrying in %.1f s",
                *(method, endpoint.route, dep.name, type(error).__name__, wait),
            )
            observer.upstream_retry(dep.name, endpoint.route, error.label)
            await anyio.sleep(wait)
            retries += 1

    async def _open(self, dep: Deployment, method: str, endpoint: Endpoint, content: bytes | None) -> httpx2.Response:
        """One request sent; its response with the body unread, whatever the status."""
        url, headers = self._route(dep, endpoint, content is not None)
        request = httpx2.Request(method, url, content=content, headers=headers, extensions=self._extensions)
        response = await self._pool.client().send(request, stream=True)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(  # the logging filter redacts secrets, even a key a proxy echoes back
                "%s %s on %r: HTTP %d %s",
                *(method, endpoint.route, dep.name, response.status_code, list(response.headers.items())),
            )
        return response

    async def _refusal(self, dep: Deployment, response: httpx2.Response) -> UpstreamError:
        """The error a 3xx, 4xx or 5xx answer stands for; its body read (capped) and the response closed."""
        try:
            body = await self._read(dep, response, MAX_ERROR_BODY, truncate=True)
        except httpx2.TransportError:
            body = b""
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
        status = response.status_code
        if status < 400:
            return redirected(dep.name, dep.base_url, status, response.headers.get("location"), self.redactor)
        return error_for_status(
            dep.name,
            dep.key_env,
            status,
            body,
            _retry_after(response.headers.get("retry-after")),
            self.redactor,
            has_key=dep.api_key is not None,
        )

    async def _capped(self, dep: Deployment, response: httpx2.Response) -> AsyncIterator[bytes]:
        """The body's chunks, refusing more than MAX_BODY bytes in all (an endless answer)."""
        total = 0
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if total > MAX_BODY:
                raise too_large(dep.name, MAX_BODY, "an answer")
            yield chunk

    async def _read(self, dep: Deployment, response: httpx2.Response, cap: int, *, truncate: bool = False) -> bytes:
        """The whole body, at most `cap` bytes: past it, cut (error bodies) or refuse (answers)."""
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                if truncate:
                    break
                raise too_large(dep.name, cap, "an answer")
        return b"".join(chunks)[:cap]

    async def _json(self, dep: Deployment, response: httpx2.Response) -> Any:
        try:
            content = await self._read(dep, response, MAX_BODY)
        except httpx2.TransportError as exc:
            raise error_for_transport(dep.name, dep.base_url, *_failure(exc), self._timeout) from None
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
        try:
            data = json.loads(content)
        except (ValueError, RecursionError):  # not JSON, or nested past what the parser can follow
            raise invalid_response(
                dep.name, "a body that is not JSON", content, response.headers.get("content-type"), self.redactor
            ) from None
        # Redact decoded strings before anything reads them: escaped echoes (\/ or \u0073) too. An
        # answer whose bytes hold no secret and no escape is returned as parsed (embeddings: no walk
        # over millions of floats).
        return data if self.redactor.clean(content) else self.redactor.data(data)


def upstream_client(settings: Settings, observer: Observer | None = None) -> tuple[Pool, UpstreamClient]:
    """The pool (`async with` it: it closes the client) and the upstream client over it; raises
    `ConfigError` before anything runs for what would make the client fail (a proxy, a CA file)."""
    pool = Pool(settings)
    return pool, UpstreamClient(pool, settings, observer=observer)
