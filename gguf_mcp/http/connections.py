"""Connections: a cap on how many are open, and deadlines for each request's header and body.

One way to configure it, whoever runs the server: `guarding_connections` puts the settings'
limits in the ASGI lifespan state, which uvicorn hands to every connection's protocol, and
`GuardedH11Protocol` (`serve_http` passes it; under uvicorn's CLI, `--http
gguf_mcp.http:GuardedH11Protocol`) reads them there.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from gguf_mcp.config import Settings

log = logging.getLogger(__name__)

Owed = Literal["header", "body"]
"""What a stalled connection has not sent yet: its request header, or the rest of its body."""


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout: float
    body_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(settings.max_connections, settings.header_timeout, settings.body_timeout)

    def timeout(self, owed: Owed) -> float:
        return self.header_timeout if owed == "header" else self.body_timeout


_LIMITS_KEY = "gguf_mcp.connection_limits"
_DEFAULT_LIMITS = ConnectionLimits(
    *(Settings.model_fields[name].default for name in ("max_connections", "header_timeout", "body_timeout"))
)


class _Throttled:
    """A warning that an attack would repeat per connection: at most one line per `period` seconds."""

    def __init__(self, period: float = 10.0) -> None:
        self._period = period
        self._last = -math.inf
        self._skipped = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self._period:
            self._skipped += 1
            return
        if self._skipped:
            message += f" (and {self._skipped} more times since the previous line)"
        log.warning(message, *args)
        self._last, self._skipped = now, 0


_cap_reached = _Throttled()
_out_of_descriptors = _Throttled()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with the guards it lacks against slow or idle clients.

    uvicorn closes a kept-alive connection after `timeout_keep_alive` only between requests, and
    stops that timer at the first byte of the next one; a connection that sends nothing, half a
    request header, or a header and one byte of body, is never closed, and a thousand of them
    exhaust a 1,024-descriptor process before any auth. `limit_concurrency` does not help: it
    counts those connections too and answers 503 to everyone else. So:

    - deadlines: a connection must complete a request header within `header_timeout` seconds of
      connecting or of its previous response, and that request's body within `body_timeout` of
      its header (trickling bytes extends neither), else it is closed;
    - a cap: past `max_connections`, a new connection closes the one stalled longest (waiting for
      a header or a body: an attacker's, since a real client sends both at once), or, when every
      connection is busy with a request, is closed itself.

    uvicorn's own `H11Protocol` is not public API; tests/test_http_uvicorn.py runs these guards
    against the newest uvicorn release too (pyproject.toml's uvicorn range is what it covers).
    """

    _owed: Owed | None = None
    _owed_since = 0.0
    _deadline: asyncio.TimerHandle | None = None

    @property
    def limits(self) -> ConnectionLimits:
        limits: ConnectionLimits = self.app_state.get(_LIMITS_KEY, _DEFAULT_LIMITS)
        return limits

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._track()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _owes(self) -> Owed | None:
        """What the client owes now; None while its complete request is being answered (or it is closing)."""
        if self.transport.is_closing():
            return None
        if self.cycle is None or self.cycle.response_complete:
            return "header"
        return "body" if self.cycle.more_body else None

    def _track(self) -> None:
        """A new deadline whenever what the client owes changes; the same debt keeps its deadline."""
        owed = self._owes()
        if owed == self._owed:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._owed = owed
        if owed is not None:
            self._owed_since = self.loop.time()
            self._deadline = self.loop.call_later(self.limits.timeout(owed), self._overdue)

    def _overdue(self) -> None:
        self._deadline = None
        owed = self._owed
        if owed is not None and not self.transport.is_closing():
            log.debug("Closed a connection that sent no complete request %s in %g s", owed, self.limits.timeout(owed))
            self.transport.close()

    def _make_room(self) -> None:
        open_ = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and not c.transport.is_closing()]
        if len(open_) <= self.limits.max_connections:
            return  # the others are closing already
        # This connection has sent nothing yet: it is stalled too, and the newest.
        victim = min((c for c in open_ if c._owed is not None), key=lambda c: c._owed_since)
        _cap_reached.warning(
            "%d HTTP connections open, past GGUF_MCP_MAX_CONNECTIONS: closed %s",
            len(open_),
            f"the one stalled longest (waiting for its request {victim._owed})" if victim is not self else "a new one",
        )
        victim.transport.close()


def guarding_connections(app: ASGIApp, settings: Settings) -> ASGIApp:
    """`app`, which at start-up hands GuardedH11Protocol the settings' limits and quiets asyncio's accept errors."""
    limits = ConnectionLimits.from_settings(settings)

    async def with_limits(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # uvicorn passes this same dict to each connection's protocol (as `app_state`).
            scope.setdefault("state", {})[_LIMITS_KEY] = limits
            asyncio.get_running_loop().set_exception_handler(quiet_descriptor_exhaustion)
        await app(scope, receive, send)

    return with_limits


def quiet_descriptor_exhaustion(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """One warning line, not asyncio's tracebacks, when accept() finds no free file descriptor.

    asyncio then stops accepting for a second and retries; meanwhile the connection cap closes
    stalled connections, so the server recovers on its own. Before CPython fixed gh-151615 (2026),
    asyncio schedules one retry per accept attempt of the pass, up to the listen backlog (2,048
    under uvicorn): once the listener is closed (SIGTERM), those retries fail on its closed
    descriptor by the thousand, harmlessly, and are dropped here without a line.
    """
    message = str(context.get("message", ""))
    if message.startswith("socket.accept() out of system resource"):
        _out_of_descriptors.warning(
            "Out of file descriptors accepting connections (%s); pausing 1 s. Keep GGUF_MCP_MAX_CONNECTIONS "
            "well below the open-file limit (ulimit -n).",
            context.get("exception"),
        )
    elif not (_start_serving_retry(message) and isinstance(context.get("exception"), (ValueError, OSError))):
        loop.default_exception_handler(context)


def _start_serving_retry(message: str) -> bool:
    """Whether asyncio's message names its accept retry (`loop._start_serving`, a callback it scheduled)."""
    return message.startswith("Exception in callback") and "._start_serving(" in message
