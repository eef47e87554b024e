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
from httpx_sse import EventSource

from gguf_mcp import __version__
from gguf_mcp.config import Deployment, Settings
from gguf_mcp.errors import (
    UpstreamError,
    error_for_status,
    error_for_transport,
    invalid_response,
    stream_broken,
    stream_error,
)

log = logging.getLogger(__name__)

MODELS = "/v1/models"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
MESSAGES = "/v1/messages"
ANTHROPIC_VERSION = "2023-06-01"
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
            wait = max(wait, min(error.retry_after, self.max_delay))
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
        # Built once: the hot path only looks these up.
        self._headers: dict[tuple[str, bool], dict[str, str]] = {}
        for dep in settings.deployments.values():
            key = dep.api_key.get_secret_value() if dep.api_key else None
            self._headers[(dep.name, False)] = {"authorization": f"Bearer {key}"} if key else {}
            anthropic = {"anthropic-version": ANTHROPIC_VERSION}
            self._headers[(dep.name, True)] = {"x-api-key": key, **anthropic} if key else anthropic

    async def get(self, deployment: Deployment, route: str) -> Any:
        return self._json(deployment, await self._send(deployment, "GET", route, None, stream=False))

    async def post(self, deployment: Deployment, route: str, body: dict[str, Any]) -> Any:
        return self._json(deployment, await self._send(deployment, "POST", route, body, stream=False))

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
        response = await self._send(dep, "POST", route, body, stream=True)
        final = False
        try:
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                raise invalid_response(
                    dep.name, "a body that is not an event stream", await response.aread(), content_type
                )
            async for event in EventSource(response).aiter_sse():
                if final:
                    continue  # read to the end: a fully read response returns its connection to the pool
                if event.data == "[DONE]":
                    final = True
                    continue
                try:
                    data = json.loads(event.data)
                except ValueError:
                    raise invalid_response(
                        dep.name, "an event that is not JSON", event.data.encode(), content_type
                    ) from None
                if not isinstance(data, dict):
                    raise invalid_response(
                        dep.name, "an event that is not a JSON object", event.data.encode(), content_type
                    )
                if event.event == "error" or data.get("type") == "error" or ("error" in data and "choices" not in data):
                    raise stream_error(dep.name, data, self._secrets)
                yield data
                if data.get("type") == "message_stop":
                    final = True
        except httpx.TransportError as exc:
            raise stream_broken(dep.name, exc, self._timeout) from None
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
        if not final:
            raise stream_broken(dep.name, None, self._timeout)

    async def _send(
        self, dep: Deployment, method: str, route: str, body: dict[str, Any] | None, *, stream: bool
    ) -> httpx.Response:
        """Send until a non-error status or the retry policy gives up; `stream` leaves the body unread."""
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
                response = await self._http.send(request, stream=stream)
            except httpx.RemoteProtocolError as exc:
                # llama-server closes a kept-alive connection after 100 requests without saying so;
                # the pooled client then finds it dead before any response. Resend once, at once.
                if not resent_stale:
                    resent_stale = True
                    continue
                error: UpstreamError = error_for_transport(dep.name, dep.base_url, exc, self._timeout)
            except httpx.TransportError as exc:
                error = error_for_transport(dep.name, dep.base_url, exc, self._timeout)
            else:
                if response.status_code < 400:
                    return response
                try:
                    body_bytes = await response.aread() if stream else response.content
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

    def _json(self, dep: Deployment, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise invalid_response(
                dep.name, "a body that is not JSON", response.content, response.headers.get("content-type")
            ) from None


@asynccontextmanager
async def open_upstream(settings: Settings) -> AsyncIterator[UpstreamClient]:
    """The process-wide pooled client: opened in the server lifespan, closed at shutdown."""
    timeout = httpx.Timeout(connect=10.0, read=settings.timeout, write=30.0, pool=30.0)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, headers={"user-agent": USER_AGENT}) as http:
        yield UpstreamClient(http, settings)
