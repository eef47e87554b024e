"""A client's own limits (its `[clients.<name>]` table, or `[client_defaults]`): checked before a
call waits or is sent, its tokens counted when it ends, whatever the outcome.

`tokens_per_hour` and `tokens_per_day` count prompt plus completion tokens over sliding windows
(the last hour, the last 24 hours), each kept as 60 buckets (1 min, 24 min): a bucket's tokens
leave the window together, one window after the bucket ends, which is the moment a refusal names.
Sliding rather than fixed (calendar) windows: a fixed window lets a client spend twice its budget
in the hour around the boundary and resets everyone at the same instant; the buckets bound the
memory (two deques of at most 60 pairs per client) and make the stated time exact for what is
counted. A call is refused once the window holds the limit; one admitted below it counts in full
when it ends (its size is known only then), so a client can overshoot by what it had in flight.

Per process: under `uvicorn --workers N` each worker counts alone (up to N times the limits).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gguf_mcp.clients import Caller, ClientPolicy
from gguf_mcp.errors import concurrent_limit, max_tokens_lowered, max_tokens_refused, token_limit

HOUR_S = 3600.0
DAY_S = 86400.0
BUCKETS = 60


class TokenWindow:
    """Tokens counted over the last `span` seconds, in `buckets` buckets."""

    def __init__(self, span: float, buckets: int = BUCKETS) -> None:
        self._span = span
        self._width = span / buckets
        self._counts: deque[list[int]] = deque()  # [bucket number, tokens], oldest first
        self._total = 0

    def add(self, now: float, tokens: int) -> None:
        bucket = int(now // self._width)
        if self._counts and self._counts[-1][0] == bucket:
            self._counts[-1][1] += tokens
        else:
            self._counts.append([bucket, tokens])
        self._total += tokens
        self._expire(now)

    def used(self, now: float) -> int:
        self._expire(now)
        return self._total

    def frees_at(self, now: float, limit: int) -> float:
        """When the count drops below `limit` (clock seconds), if nothing more is added."""
        self._expire(now)
        left = self._total
        if left < limit:
            return now
        for bucket, tokens in self._counts:
            left -= tokens
            if left < limit:
                return self._leaves(bucket)
        return now

    def _leaves(self, bucket: int) -> float:
        return (bucket + 1) * self._width + self._span

    def _expire(self, now: float) -> None:
        while self._counts and self._leaves(self._counts[0][0]) <= now:
            self._total -= self._counts.popleft()[1]


@dataclass
class _Usage:
    in_flight: int = 0
    hour: TokenWindow = field(default_factory=lambda: TokenWindow(HOUR_S))
    day: TokenWindow = field(default_factory=lambda: TokenWindow(DAY_S))


@dataclass(frozen=True)
class Admission:
    """A call the client's limits let through: what to send as max_tokens, and what to tell the caller."""

    client: str
    max_tokens: int | None
    note: str | None = None
    """Set when the client's cap lowered the call's max_tokens: the result should say it."""


class ClientLimits:
    """Every client's calls in flight and tokens, in this process. `clock` is monotonic, `wall` epoch seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._wall = wall
        self._usage: dict[str, _Usage] = {}

    def admit(self, caller: Caller, max_tokens: int | None, *, generates: bool = True) -> Admission:
        """Let a call through or raise `ClientLimitReached` (nothing counted then).

        `generates`: the call has a max_tokens to cap (chat, messages, complete; not embed).
        """
        policy = caller.policy
        usage = self._usage.setdefault(caller.name, _Usage())
        if policy.max_concurrent is not None and usage.in_flight >= policy.max_concurrent:
            raise concurrent_limit(caller.name, policy.max_concurrent)
        self._check_window(caller.name, "tokens_per_hour", policy.tokens_per_hour, usage.hour)
        self._check_window(caller.name, "tokens_per_day", policy.tokens_per_day, usage.day)
        admission = _capped(caller.name, policy, max_tokens) if generates else Admission(caller.name, max_tokens)
        usage.in_flight += 1
        return admission

    def release(self, admission: Admission, tokens: int) -> None:
        """The call ended (answered, failed, cut or cancelled): count the tokens the deployment reported."""
        usage = self._usage[admission.client]
        usage.in_flight -= 1
        if tokens > 0:
            now = self._clock()
            usage.hour.add(now, tokens)
            usage.day.add(now, tokens)

    def in_flight(self, client: str) -> int:
        usage = self._usage.get(client)
        return usage.in_flight if usage else 0

    def used(self, client: str) -> tuple[int, int]:
        """Tokens counted in the last hour and the last 24 hours."""
        usage = self._usage.get(client)
        now = self._clock()
        return (usage.hour.used(now), usage.day.used(now)) if usage else (0, 0)

    def _check_window(self, client: str, limit: str, value: int | None, window: TokenWindow) -> None:
        if value is None:
            return
        now = self._clock()
        used = window.used(now)
        if used >= value:
            wall = self._wall()
            raise token_limit(client, limit, value, used, wall + window.frees_at(now, value) - now, wall)


def _capped(client: str, policy: ClientPolicy, asked: int | None) -> Admission:
    """max_tokens under the client's cap: a call naming none gets the cap (a deployment's own default
    may be unbounded); one over it is lowered, or refused with `over_max_tokens = "refuse"`."""
    cap = policy.max_tokens
    if cap is None or (asked is not None and asked <= cap):
        return Admission(client, asked)
    if asked is None:
        return Admission(client, cap)
    if policy.over_max_tokens == "refuse":
        raise max_tokens_refused(client, asked, cap)
    return Admission(client, cap, max_tokens_lowered(asked, cap))
