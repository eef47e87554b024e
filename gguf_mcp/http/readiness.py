"""Liveness (`/healthz`) and readiness (`/readyz`): does every deployment answer its health check."""

from __future__ import annotations

import logging
import math
import time

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gguf_mcp.health import check_all
from gguf_mcp.state import AppState
from gguf_mcp.upstream import NO_RETRY

log = logging.getLogger(__name__)

READY_TTL_S = 5.0
"""How long a readiness answer is reused, so a storm of probes costs one upstream round."""
PROBE_TIMEOUT_S = 5.0


class Readiness:
    """Whether every deployment answers the shared health check, re-checked at most every `ttl` s.

    A probe must answer quickly and say why: each check waits at most PROBE_TIMEOUT_S, without
    retries, through the server's own upstream client. Concurrent probes share one check.
    """

    def __init__(self, state: AppState, ttl: float = READY_TTL_S) -> None:
        self._state = state
        self._ttl = ttl
        self._lock = anyio.Lock()
        self._states: dict[str, str] = {}
        self._checked_at = -math.inf

    async def states(self) -> dict[str, str]:
        """Deployment name -> "ok" or the failure's short label, in configuration order."""
        async with self._lock:
            if time.monotonic() - self._checked_at >= self._ttl:
                deployments = list(self._state.settings.deployments.values())
                found = await check_all(self._state.upstream, deployments, within=PROBE_TIMEOUT_S, retry=NO_RETRY)
                for health in found:  # log changes only, not every probe
                    name = health.deployment.name
                    if health.label != self._states.get(name, "ok"):
                        if health.ok:
                            log.warning("Deployment %r is ready again", name)
                        else:
                            log.warning("Deployment %r is not ready (%s): %s", name, health.label, health.error)
                self._states = {health.deployment.name: health.label for health in found}
                self._checked_at = time.monotonic()
            return dict(self._states)

    async def endpoint(self, _: Request) -> Response:
        states = await self.states()
        ready = all(state == "ok" for state in states.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "deployments": states},
            status_code=200 if ready else 503,
            headers={"cache-control": "no-store"},
        )


async def healthz(_: Request) -> Response:
    """Liveness only: no upstream call, nothing about the configuration."""
    return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})
