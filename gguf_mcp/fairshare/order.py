"""Which waiting call gets the next free slot: clients in turn (`Rotation`), or first come first
served (`FirstCome`, today's llama-server queue, kept for the fairness benchmark).

Pure bookkeeping, no time and no I/O: `gguf_mcp.fairshare.queue` does the waiting.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


class WaitOrder(Protocol[T]):
    """The calls waiting for a slot of one deployment, each under its client's name."""

    def took(self, client: str) -> None:
        """A call of `client` took a free slot without waiting."""
        ...

    def push(self, client: str, item: T) -> None: ...

    def pop(self) -> tuple[str, T]:
        """The call the next free slot goes to (with its client); there must be one."""
        ...

    def remove(self, client: str, item: T) -> None:
        """A waiting call leaves (cancelled, timed out)."""
        ...

    def ahead(self, client: str, item: T) -> int:
        """How many waiting calls get a slot before this one, if no other call arrives."""
        ...

    def __contains__(self, client: object) -> bool:
        """Whether `client` has a call waiting."""
        ...

    def __len__(self) -> int: ...


class Rotation(Generic[T]):
    """Clients in turn: the next slot goes to the waiting client served least recently, and within
    a client to its oldest call.

    While several clients wait this is round robin, one slot each in turn. A client that arrives
    (or comes back after an idle spell) goes before those served since it was last served, so a
    client making one call at a time gets the next slot that frees, however many calls another
    client has queued; and no client starves, since each one served goes to the back. Calls that
    took a free slot without waiting count as served too.
    """

    FORGET_PAST = 4096
    """Clients remembered (one number each) before the memory is dropped, at a moment nobody waits."""

    def __init__(self) -> None:
        self._waiting: dict[str, deque[tuple[int, T]]] = {}
        self._served: dict[str, int] = {}  # client -> the grant number it was last served at
        self._grants = 0
        self._arrivals = 0
        self._size = 0

    def _turn(self, client: str) -> tuple[int, int]:
        """The sort key of a waiting client: last served (never: -1), then the arrival of its oldest call."""
        return self._served.get(client, -1), self._waiting[client][0][0]

    def took(self, client: str) -> None:
        self._served[client] = self._grants
        self._grants += 1

    def push(self, client: str, item: T) -> None:
        self._waiting.setdefault(client, deque()).append((self._arrivals, item))
        self._arrivals += 1
        self._size += 1

    def pop(self) -> tuple[str, T]:
        client = min(self._waiting, key=self._turn)
        calls = self._waiting[client]
        _, item = calls.popleft()
        if not calls:
            del self._waiting[client]
        self.took(client)
        self._left()
        return client, item

    def remove(self, client: str, item: T) -> None:
        calls = self._waiting[client]
        calls.remove(next(entry for entry in calls if entry[1] is item))
        if not calls:
            del self._waiting[client]
        self._left()

    def _left(self) -> None:
        self._size -= 1
        if not self._size and len(self._served) > self.FORGET_PAST:
            self._served.clear()

    def ahead(self, client: str, item: T) -> int:
        # The served client goes to the back each time, so clients keep their order among themselves:
        # this call is its client's (i+1)-th; each client before it gets i+1 turns first, each after it i.
        calls = self._waiting[client]
        index = next(i for i, entry in enumerate(calls) if entry[1] is item)
        mine = self._turn(client)
        return index + sum(
            min(len(others), index + (self._turn(other) < mine))
            for other, others in self._waiting.items()
            if other != client
        )

    def __contains__(self, client: object) -> bool:
        return client in self._waiting

    def __len__(self) -> int:
        return self._size


class FirstCome(Generic[T]):
    """First come first served, whoever the client: what llama-server's own queue does."""

    def __init__(self) -> None:
        self._waiting: deque[tuple[str, T]] = deque()

    def took(self, client: str) -> None:
        pass

    def push(self, client: str, item: T) -> None:
        self._waiting.append((client, item))

    def pop(self) -> tuple[str, T]:
        return self._waiting.popleft()

    def remove(self, client: str, item: T) -> None:
        self._waiting.remove(next(entry for entry in self._waiting if entry[1] is item))

    def ahead(self, client: str, item: T) -> int:
        return next(i for i, entry in enumerate(self._waiting) if entry[1] is item)

    def __contains__(self, client: object) -> bool:
        return any(waiting == client for waiting, _ in self._waiting)

    def __len__(self) -> int:
        return len(self._waiting)
