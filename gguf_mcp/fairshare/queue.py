"""A deployment's slots, shared fairly: at most `slots` calls at once, the rest wait their turn.

A slot is what llama-server calls one (`--parallel`): a generation in progress. Past them, a call
waits here rather than in llama-server's own first-come queue, so that the order is ours to choose
(`Rotation`: clients in turn) and a wait can end cleanly: a cancelled or timed-out call leaves the
queue at once, and a wait past its bound is the `saturated` error, never silence. A freed slot is
handed to the next waiting call directly (no call that arrives later can take it first).

One exception, `grace`: when a client's last running call ends while other clients' calls wait,
its slot is held for it that long, because its next call is most likely a round trip away (an
agent reads the answer and calls again). Handed over at once, the slot would go to a queued call
and the returning client would wait a whole generation for the next one, however fair the order:
a client making one call at a time would lose a turn on every call. Held, it loses nothing, at
the price of one slot idle for its round trip (or the whole grace if it does not come back).
That is the only time a slot idles while a call waits.

One event loop owns a queue; nothing here blocks or awaits while the bookkeeping is inconsistent.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import anyio

from gguf_mcp.errors import saturated
from gguf_mcp.fairshare.order import Rotation, WaitOrder

OnWait = Callable[[int], Awaitable[None]]
"""Told how many calls are ahead, when a call starts waiting and whenever that number changes."""
OnQueue = Callable[[str, str, int], None]
"""Told (deployment, tag, +1) when a call starts waiting and (deployment, tag, -1) when it stops (a metric)."""


@dataclass(eq=False)
class _Waiter:
    client: str
    tag: str
    watching: bool
    granted: bool = False
    wake: anyio.Event = field(default_factory=anyio.Event)


class FairQueue:
    """The slots of one deployment. `slots=None`: no limit (its slot count is unknown)."""

    def __init__(
        self,
        deployment: str,
        slots: int | None,
        *,
        order: WaitOrder[Any] | None = None,
        on_queue: OnQueue | None = None,
        grace: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deployment = deployment
        self._slots = slots
        self._busy = 0  # slots running a call, or held
        self._order: WaitOrder[Any] = order if order is not None else Rotation()
        self._on_queue = on_queue
        self._watchers: set[_Waiter] = set()  # the waiting calls told their place
        self._waiters: set[_Waiter] = set()  # every waiting call
        self._grace = grace
        self._clock = clock
        self._running: dict[str, int] = {}  # client -> its calls holding a slot
        self._held: dict[str, float] = {}  # client -> when the slot held for it is given up (clock)

    @property
    def slots(self) -> int | None:
        return self._slots

    @slots.setter
    def slots(self, slots: int | None) -> None:
        """A new slot count (found later, or changed): more slots admit waiting calls at once."""
        self._slots = slots
        self._dispatch()

    @property
    def busy(self) -> int:
        """Slots in use."""
        return self._busy

    @property
    def waiting(self) -> int:
        return len(self._order)

    @property
    def held(self) -> dict[str, float]:
        """The slots held for clients (see the module's docstring), by client: when each is given up."""
        return dict(self._held)

    @asynccontextmanager
    async def slot(
        self,
        client: str,
        *,
        tag: str | None = None,
        on_wait: OnWait | None = None,
        within: float | None = None,
        bound: str = "time-out",
    ) -> AsyncIterator[float]:
        """Hold a slot for the body; yields the seconds waited for it. Calls take turns by `client`;
        `tag` (default: the client) is what `on_queue` is told.

        Raises `UpstreamBusy` ("saturated") if none is free within `within` seconds (`bound` says
        which limit that was, for the message). Cancelled while waiting, the call leaves the queue.
        """
        waited = await self.acquire(client, tag=tag, on_wait=on_wait, within=within, bound=bound)
        try:
            yield waited
        finally:
            self.release(client)

    async def acquire(
        self,
        client: str,
        *,
        tag: str | None = None,
        on_wait: OnWait | None = None,
        within: float | None = None,
        bound: str = "time-out",
    ) -> float:
        """Take a slot (waiting for it if none is free); `release(client)` gives it back. See `slot`."""
        if self._took_at_once(client):
            return 0.0
        waiter = _Waiter(client, tag if tag is not None else client, watching=on_wait is not None)
        started = time.monotonic()
        self._push(waiter)
        try:
            with anyio.move_on_after(math.inf if within is None else within):
                await self._wait(waiter, on_wait)
        except BaseException:
            self._abandon(waiter)
            raise
        if not waiter.granted:
            self._give_up(waiter, within or 0.0, bound)
        return time.monotonic() - started

    def _give_up(self, waiter: _Waiter, waited: float, bound: str) -> NoReturn:
        ahead = self._order.ahead(waiter.client, waiter)
        self._abandon(waiter)
        raise saturated(self.deployment, waited, self._slots or 0, ahead, bound)

    def _took_at_once(self, client: str) -> bool:
        """Whether `client` got a slot without waiting: its own, held since its last call ended, or a free one."""
        if self._held:
            if self._held.pop(client, None) is not None:
                self._took(client)
                return True
            self.expire()
        if self._slots is not None and self._busy >= self._slots:
            return False
        self._busy += 1  # a free slot means nobody waits
        self._took(client)
        return True

    def _took(self, client: str) -> None:
        self._order.took(client)
        self._running[client] = self._running.get(client, 0) + 1

    def release(self, client: str) -> None:
        """Give back a slot a call of `client` held."""
        if self._ran(client) and self._worth_holding(client):
            self._held[client] = self._clock() + self._grace  # its last call: the slot stays its own a moment
            for waiter in self._waiters:  # each sets its timer to the grace's end (any one ends it)
                waiter.wake.set()
            return
        self._busy -= 1
        self._dispatch()

    def _worth_holding(self, client: str) -> bool:
        """Other clients' calls wait, none of its own (which would take the slot in turn)."""
        return self._grace > 0 and self._slots is not None and bool(self._order) and client not in self._order

    def _ran(self, client: str) -> bool:
        """One call of `client` ended; whether it was its last one running."""
        running = self._running[client] - 1
        if running:
            self._running[client] = running
            return False
        del self._running[client]
        return True

    def expire(self) -> None:
        """Give up the slots held past their grace, to the waiting calls (the waiting calls call this)."""
        now = self._clock()
        for client, until in list(self._held.items()):
            if until <= now:
                del self._held[client]
                self._busy -= 1
        self._dispatch()

    async def _wait(self, waiter: _Waiter, on_wait: OnWait | None) -> None:
        told: int | None = None
        while True:
            waiter.wake = anyio.Event()  # before looking: a change while on_wait runs sets this one
            if waiter.granted:
                return
            if on_wait is not None:
                ahead = self._order.ahead(waiter.client, waiter)
                if ahead != told:
                    told = ahead
                    await on_wait(ahead)
            with anyio.move_on_after(min(self._held.values(), default=math.inf) - self._clock()):
                await waiter.wake.wait()
            self.expire()

    def _push(self, waiter: _Waiter) -> None:
        self._order.push(waiter.client, waiter)
        self._waiters.add(waiter)
        if waiter.watching:
            self._watchers.add(waiter)
        self._changed(waiter, +1)

    def _abandon(self, waiter: _Waiter) -> None:
        """A call that stops waiting: out of the queue, or its slot given back if it had just got one."""
        self._watchers.discard(waiter)
        self._waiters.discard(waiter)
        if waiter.granted:  # handed a slot, but gone before it ran: no client to hold it for
            self._ran(waiter.client)
            self._busy -= 1
            self._dispatch()
        else:
            self._order.remove(waiter.client, waiter)
            self._changed(waiter, -1)

    def _dispatch(self) -> None:
        """Hand free slots to waiting calls, in the order's turn."""
        while self._order and (self._slots is None or self._busy < self._slots):
            client, waiter = self._order.pop()
            waiter.granted = True
            self._busy += 1
            self._running[client] = self._running.get(client, 0) + 1
            self._watchers.discard(waiter)
            self._waiters.discard(waiter)
            waiter.wake.set()
            self._changed(waiter, -1)

    def _changed(self, waiter: _Waiter, change: int) -> None:
        """A call started or stopped waiting: tell the metric, and every watcher to look at its place again."""
        if self._on_queue is not None:
            self._on_queue(self.deployment, waiter.tag, change)
        for watcher in self._watchers:
            watcher.wake.set()
