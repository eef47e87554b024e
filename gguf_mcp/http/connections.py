"""Connections: a cap on how many are open, and a deadline for each request header."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from gguf_mcp.config import Settings

log = logging.getLogger(__name__)


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
    """uvicorn's HTTP/1.1 protocol with the two guards it lacks against slow or idle clients.

    uvicorn (0.54) closes a kept-alive connection after `timeout_keep_alive` only between requests,
    and stops that timer at the first byte of the next one; a connection that sends nothing, or
    half a request header, is never closed, and 1,100 of them exhaust a 1,024-descriptor process
    before any auth (issue 13 point 10). `limit_concurrency` does not help: it counts those
    connections too and answers 503 to everyone else. So:

    - a deadline: a connection must complete a request header within `header_timeout` seconds of
      connecting or of its previous response (trickling bytes does not extend it), else it is closed;
    - a cap: past `max_connections`, a new connection closes the one that has waited longest for its
      header (an attacker's, since a real client sends its header at once), or, when every
      connection is busy with a request, is closed itself.

    For `gguf-mcp --transport http` `serve_http` passes it; under uvicorn's CLI pass
    `--http gguf_mcp.http:GuardedH11Protocol` (`create_app` sets the limits from the settings).
    """

    max_connections: int = Settings.model_fields["max_connections"].default
    header_timeout: float = Settings.model_fields["header_timeout"].default
    _deadline: asyncio.TimerHandle | None = None
    _waiting_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._await_header()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_header()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _waiting(self) -> bool:
        """No request in progress: connected or answered, and the next header not complete yet."""
        return (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing()

    def _await_header(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._waiting_since = self.loop.time()
        self._deadline = self.loop.call_later(self.header_timeout, self._header_overdue)

    def _header_overdue(self) -> None:
        self._deadline = None
        if self._waiting():
            log.debug("Closed a connection that sent no complete request header in %g s", self.header_timeout)
            self.transport.close()

    def _make_room(self) -> None:
        open_ = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and not c.transport.is_closing()]
        if len(open_) <= self.max_connections:
            return  # the others are closing already
        waiting = [c for c in open_ if c is not self and c._waiting()]
        victim = min(waiting, key=lambda c: c._waiting_since) if waiting else self
        _cap_reached.warning(
            "%d HTTP connections open, past GGUF_MCP_MAX_CONNECTIONS: closed %s",
            len(open_),
            "the one waiting longest for its request header" if waiting else "a new one, all are busy",
        )
        victim.transport.close()


def quiet_descriptor_exhaustion(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """One warning line, not asyncio's traceback, when accept() finds no free file descriptor.

    asyncio then stops accepting for a second and retries; meanwhile the connection cap closes
    the connections that wait for a header, so the server recovers on its own.
    """
    if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
        _out_of_descriptors.warning(
            "Out of file descriptors accepting connections (%s); pausing 1 s. Keep GGUF_MCP_MAX_CONNECTIONS "
            "well below the open-file limit (ulimit -n).",
            context.get("exception"),
        )
    else:
        loop.default_exception_handler(context)


def guarded_protocol(settings: Settings) -> type[GuardedH11Protocol]:
    """GuardedH11Protocol with these settings' limits (uvicorn takes a class and builds one per connection)."""
    limits = {"max_connections": settings.max_connections, "header_timeout": settings.header_timeout}
    return type("GuardedH11Protocol", (GuardedH11Protocol,), limits)
