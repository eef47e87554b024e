"""HTTP to the deployments: one pooled client, the right auth per protocol, one retry policy.

Knows nothing about MCP. Every request goes to a configured deployment's root plus one of the
fixed routes below, so no tool argument can steer a request anywhere else.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from gguf_mcp import __version__
from gguf_mcp.config import Deployment, Settings
from gguf_mcp.errors import (
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


class UpstreamClient:
    """Sends requests to deployments and returns their parsed JSON, or raises `UpstreamError`."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings, retry: RetryPolicy | None = None) -> None:
        self._http = http
        self._timeout = settings.timeout
        self._retry = retry or RetryPolicy(settings.max_retries)
        self._secrets = settings.secrets
        self._secret_bytes = tuple(secret.encode() for secret in settings.secrets)
        # Built once: the hot path only looks these up.
        self._headers: dict[tuple[str, bool], dict[str, str]] = {}
        for dep in settings.deployments.values():
            key = dep.api_key.get_secret_value() if dep.api_key else None
            self._headers[(dep.name, False)] = {"authorization": f"Bearer {key}"} if key else {}
            anthropic = {"anthropic-version": ANTHROPIC_VERSION}
            self._headers[(dep.name, True)] = {"x-api-key": key, **anthropic} if key else anthropic

    async def get(self, deployment: Deployment, route: str) -> Any:
        return await self._json(deployment, await self._send(deployment, "GET", route, None))

    async def post(self, deployment: Deployment, route: str, body: dict[str, Any]) -> Any:
        return await self._json(deployment, await self._send(deployment, "POST", route, body))

    async def stream(self, dep: Deployment, route: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """POST with `stream: true` and yield each event's JSON until the protocol's final event.

        Retries happen only before the answer starts (never once tokens are flowing). A stream
        that breaks, stalls past the read time-out or ends without `[DONE]`/`message_stop`
        raises; closing the generator (caller cancelled, deadline) closes the upstream request,
        which is what makes llama-server stop generating.
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
        except httpx.TransportError as exc:
            raise stream_broken(dep.name, exc, self._timeout) from None
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
        if not final:
            raise stream_broken(dep.name, None, self._timeout)

    async def _send(self, dep: Deployment, method: str, route: str, body: dict[str, Any] | None) -> httpx.Response:
        """Send until a non-error status or the retry policy gives up; the body is left unread."""
        url = dep.base_url + route
        headers = self._headers[(dep.name, route == MESSAGES)]
        content = json.dumps(body).encode() if body is not None else None
        if content is not None:
            headers = {**headers, "content-type": "application/json"}
        started = time.monotonic()
        attempt = 0
        resent_stale = False
        while True:
            request = self._http.build_request(method, url, content=content, headers=headers)
            try:
                response = await self._http.send(request, stream=True)
            except httpx.RemoteProtocolError as exc:
                # llama-server closes a kept-alive connection after 100 requests without saying so,
                # and the pooled client finds it dead before any response: resend once, at once.
                # Only then: a request whose answer had started may have run on the GPU.
                if not resent_stale and "without sending a response" in str(exc):
                    resent_stale = True
                    attempt += 1
                    continue
                error: UpstreamError = error_for_transport(dep.name, dep.base_url, exc, self._timeout)
            except httpx.TransportError as exc:
                error = error_for_transport(dep.name, dep.base_url, exc, self._timeout)
            else:
                if response.status_code < 400:
                    return response
                try:
                    body_bytes = await self._read(dep, response, MAX_ERROR_BODY, truncate=True)
                except httpx.TransportError:
                    body_bytes = b""
                finally:
                    await response.aclose()
                error = error_for_status(
                    dep.name,
                    dep.key_env,
                    response.status_code,
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

    async def _capped(self, dep: Deployment, response: httpx.Response) -> AsyncIterator[bytes]:
        """The body's chunks, refusing more than MAX_BODY bytes in all (an endless answer)."""
        total = 0
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if total > MAX_BODY:
                raise too_large(dep.name, MAX_BODY, "an answer")
            yield chunk

    async def _read(self, dep: Deployment, response: httpx.Response, cap: int, *, truncate: bool = False) -> bytes:
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

    async def _json(self, dep: Deployment, response: httpx.Response) -> Any:
        try:
            content = await self._read(dep, response, MAX_BODY)
        except httpx.TransportError as exc:
            raise error_for_transport(dep.name, dep.base_url, exc, self._timeout) from None
        finally:
            await response.aclose()
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
    timeout = httpx.Timeout(connect=10.0, read=settings.timeout, write=30.0, pool=30.0)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, headers={"user-agent": USER_AGENT}) as http:
        yield UpstreamClient(http, settings)
