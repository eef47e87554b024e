"""HTTP to the deployments: one pooled client, the right auth per protocol, one retry policy.

Knows nothing about MCP. Every request goes to a configured deployment's root plus one of the
fixed routes below, so no tool argument can steer a request anywhere else.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import AsyncIterator
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
        return await self._request(deployment, "GET", route, None)

    async def post(self, deployment: Deployment, route: str, body: dict[str, Any]) -> Any:
        return await self._request(deployment, "POST", route, body)

    async def _request(self, dep: Deployment, method: str, route: str, body: dict[str, Any] | None) -> Any:
        url = dep.base_url + route
        headers = self._headers[(dep.name, route == MESSAGES)]
        content = json.dumps(body).encode() if body is not None else None
        if content is not None:
            headers = {**headers, "content-type": "application/json"}
        started = time.monotonic()
        attempt = 0
        resent_stale = False
        while True:
            try:
                response = await self._http.request(method, url, content=content, headers=headers)
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
                    return self._json(dep, response)
                error = error_for_status(
                    dep.name,
                    dep.key_env,
                    response.status_code,
                    response.content,
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
