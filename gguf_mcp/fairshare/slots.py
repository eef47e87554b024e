"""How many calls a deployment runs at once, and its one `FairQueue` per process.

The count is `max_concurrency` from the deployment's table when set (it overrides the server's
own), else `total_slots` from llama-server's `GET /props`, else unknown (calls are not queued:
llama-server's own queue takes them, first come first served).

`/props` is read when a deployment's calls first overlap (a call arrives while another is in
flight), not at start-up nor on its first call: one call at a time never needs a queue (every
server has a slot), a deployment may be stopped or starting when gguf-mcp starts (GGUF Cloud
scales pods), start-up and the first call stay as fast as before, and a server that never gets
two calls at once is never asked. The answer is kept for the life of the process (the slot
count is a start-up flag of llama-server); only a failure that can heal (not ready, not
answering, time-out) is retried, on an overlapping call at least `RETRY_S` later, meanwhile
without a limit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from gguf_mcp.config import Deployment
from gguf_mcp.dialects import PROPS
from gguf_mcp.errors import UpstreamError
from gguf_mcp.fairshare.order import Rotation, WaitOrder
from gguf_mcp.fairshare.queue import FairQueue, OnQueue
from gguf_mcp.upstream import NO_RETRY, UpstreamClient

log = logging.getLogger(__name__)

PROPS_WITHIN_S = 5.0
"""The longest the first call waits for `/props` (llama-server answers it at once)."""
RETRY_S = 60.0


async def read_total_slots(upstream: UpstreamClient, dep: Deployment, within: float = PROPS_WITHIN_S) -> int | None:
    """llama-server's slot count (`GET /props`, `total_slots`); None if it does not say.

    Raises the `UpstreamError` (or `TimeoutError`) of a failure that may heal, so the caller can
    ask again later; a definite one (no such route behind a gateway, key refused) is None.
    """
    try:
        with anyio.fail_after(within):
            data = await upstream.get(dep, PROPS, retry=NO_RETRY)
    except UpstreamError as exc:
        if exc.retryable:
            raise
        return None
    return _positive_int(data.get("total_slots")) if isinstance(data, dict) else None


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class Queues:
    """One `FairQueue` per deployment, its slot count found when its calls first overlap."""

    def __init__(
        self,
        upstream: UpstreamClient,
        max_concurrency: Mapping[str, int] | None = None,
        *,
        order: Callable[[], WaitOrder[Any]] = Rotation,
        on_queue: OnQueue | None = None,
        on_slots: Callable[[str, int | None], None] | None = None,
        grace: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`grace`: how long a slot is held for a client whose last call ended (`FairQueue`)."""
        self._upstream = upstream
        self._grace = grace
        self._fixed = dict(max_concurrency or {})
        self._order = order
        self._on_queue = on_queue
        self._on_slots = on_slots
        self._clock = clock
        self._queues: dict[str, FairQueue] = {}
        self._ask_at: dict[str, float] = {}  # deployments whose count is still to be asked, and from when
        self._reading: dict[str, anyio.Lock] = {}

    async def get(self, dep: Deployment) -> FairQueue:
        """The deployment's queue; when a call overlaps another with the count unknown (or due a retry),
        after reading it."""
        queue = self._queues.get(dep.name) or self._new(dep)
        if queue.busy and self._clock() >= self._ask_at.get(dep.name, math.inf):
            async with self._reading.setdefault(dep.name, anyio.Lock()):
                if self._clock() >= self._ask_at.get(dep.name, math.inf):  # nobody asked while this one waited
                    self._counted(queue, await self._ask(dep))
        return queue

    def _new(self, dep: Deployment) -> FairQueue:
        queue = FairQueue(dep.name, None, order=self._order(), on_queue=self._on_queue, grace=self._grace)
        self._queues[dep.name] = queue
        fixed = self._fixed.get(dep.name)
        if fixed is None:
            self._ask_at[dep.name] = -math.inf
        else:
            self._counted(queue, fixed)
        return queue

    def _counted(self, queue: FairQueue, slots: int | None) -> None:
        queue.slots = slots
        if self._on_slots is not None:
            self._on_slots(queue.deployment, slots)

    async def _ask(self, dep: Deployment) -> int | None:
        """The server's own slot count; a failure that may heal is asked again `RETRY_S` later."""
        try:
            slots = await read_total_slots(self._upstream, dep)
        except (UpstreamError, TimeoutError) as exc:
            self._ask_at[dep.name] = self._clock() + RETRY_S
            why = exc.label if isinstance(exc, UpstreamError) else "time-out"
            log.info(
                "Deployment %r: no slot count yet (%s); asking again when calls overlap after %g s",
                dep.name,
                why,
                RETRY_S,
            )
            return None
        del self._ask_at[dep.name]
        if slots is None:
            log.warning(
                "Deployment %r does not report its slot count (GET /props): its calls are not queued fairly. "
                "Set max_concurrency in its [deployments.%s] table.",
                dep.name,
                dep.name,
            )
        return slots
