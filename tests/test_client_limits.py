"""A client's own limits: refused before anything is sent, naming the limit, its value and when it
frees up; tokens counted over sliding windows whose stated reset time is the truth.

Time is the test's own clock (`ClientLimits(clock=..., wall=...)`), moved by hand.
"""

from __future__ import annotations

import copy
import re
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gguf_mcp.clients import Caller, ClientPolicy
from gguf_mcp.errors import ClientLimitReached
from gguf_mcp.fairshare.limits import HOUR_S, ClientLimits, TokenWindow

EPOCH = 1_800_000_000.0  # wall-clock seconds when the test's monotonic clock reads 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return EPOCH + self.now


def limits() -> tuple[ClientLimits, Clock]:
    clock = Clock()
    return ClientLimits(clock=clock, wall=clock.wall), clock


def caller(name: str = "team-a", **policy: object) -> Caller:
    return Caller(name, ClientPolicy(**policy))  # type: ignore[arg-type]


# --- The window ---------------------------------------------------------------------------------

adds = st.lists(st.tuples(st.floats(0, 2 * HOUR_S), st.integers(0, 5000)), max_size=40)


@given(adds=adds, limit=st.integers(1, 40_000), later=st.floats(0, 2 * HOUR_S))
@settings(max_examples=300, deadline=None)
def test_the_time_a_window_frees_up_is_exactly_when_its_count_drops_below_the_limit(
    adds: list[tuple[float, int]], limit: int, later: float
) -> None:
    window = TokenWindow(HOUR_S)
    now = 0.0
    for step, tokens in adds:
        now += step / 40
        window.add(now, tokens)
    now += later
    frees = window.frees_at(now, limit)
    assert frees >= now
    assert copy.deepcopy(window).used(frees) < limit
    if frees > now:  # not free yet: still at or over the limit a moment before
        assert copy.deepcopy(window).used(frees - 1e-6) >= limit


@given(adds=adds, later=st.floats(0, 2 * HOUR_S))
@settings(max_examples=300, deadline=None)
def test_a_window_counts_what_was_added_within_the_last_hour_to_the_minute(
    adds: list[tuple[float, int]], later: float
) -> None:
    window = TokenWindow(HOUR_S)
    now = 0.0
    added: list[tuple[float, int]] = []
    for step, tokens in adds:
        now += step / 40
        window.add(now, tokens)
        added.append((now, tokens))
    now += later
    used = window.used(now)
    # Whole minutes: everything from the last 59 minutes is in, nothing older than 61 minutes.
    assert (
        sum(n for t, n in added if t > now - HOUR_S + 60) <= used <= sum(n for t, n in added if t > now - HOUR_S - 60)
    )


# --- Calls in flight ----------------------------------------------------------------------------


def test_past_max_concurrent_a_call_is_refused_until_one_ends() -> None:
    lim, _ = limits()
    team = caller(max_concurrent=2)
    first = lim.admit(team, None)
    lim.admit(team, None)
    with pytest.raises(ClientLimitReached) as refused:
        lim.admit(team, None)
    error = refused.value
    assert (error.label, error.limit, error.value) == ("limit reached", "max_concurrent", 2)
    assert "max_concurrent = 2" in str(error) and "nothing was sent" in str(error)
    assert "when one of them ends" in str(error)
    assert lim.in_flight("team-a") == 2  # the refused call counted nothing
    lim.release(first, 0)
    lim.admit(team, None)


def test_limits_are_per_client() -> None:
    lim, _ = limits()
    lim.admit(caller("a", max_concurrent=1), None)
    lim.admit(caller("b", max_concurrent=1), None)
    with pytest.raises(ClientLimitReached):
        lim.admit(caller("a", max_concurrent=1), None)


# --- Tokens per hour and per day ----------------------------------------------------------------


def test_past_tokens_per_hour_a_call_is_refused_with_the_true_time_it_frees_up() -> None:
    lim, clock = limits()
    team = caller(tokens_per_hour=1000)
    clock.now = 100.0  # minute 1 of the window
    lim.release(lim.admit(team, None), 600)
    clock.now = 1900.0  # minute 31
    lim.release(lim.admit(team, None), 500)
    clock.now = 2000.0
    with pytest.raises(ClientLimitReached) as refused:
        lim.admit(team, None)
    error = refused.value
    assert (error.limit, error.value) == ("tokens_per_hour", 1000)
    # The 600 tokens of minute 1 leave one hour after that minute ends: at 120 s + 3600 s.
    assert error.resets_at == EPOCH + 3720.0
    stated = datetime.fromtimestamp(EPOCH + 3720.0, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    message = str(error)
    assert "used 1100 tokens in the last hour" in message and "tokens_per_hour = 1000" in message, message
    assert f"{stated} (in 0 h 28 min 40 s)" in message, message
    clock.now = 3719.0
    with pytest.raises(ClientLimitReached):
        lim.admit(team, None)
    clock.now = 3720.0
    lim.admit(team, None)  # as stated


def test_past_tokens_per_day_a_call_is_refused_naming_the_day_limit() -> None:
    lim, clock = limits()
    team = caller(tokens_per_hour=10_000, tokens_per_day=3000)
    for hour in range(3):
        clock.now = hour * HOUR_S
        lim.release(lim.admit(team, None), 1000)
    with pytest.raises(ClientLimitReached) as refused:
        lim.admit(team, None)
    assert refused.value.limit == "tokens_per_day"
    assert re.search(r"used 3000 tokens in the last 24 hours.*\(in 2\d h \d+ min \d+ s\)", str(refused.value))


def test_a_call_that_ends_in_error_or_cancelled_is_counted_with_what_it_reported() -> None:
    lim, _ = limits()
    team = caller(tokens_per_hour=100)
    lim.release(lim.admit(team, None), 150)  # e.g. a stream cut after 150 tokens
    assert lim.used("team-a") == (150, 150)
    assert lim.in_flight("team-a") == 0


# --- max_tokens -------------------------------------------------------------------------------


def test_max_tokens_over_the_cap_is_lowered_and_the_result_says_so() -> None:
    lim, _ = limits()
    admission = lim.admit(caller(max_tokens=256), 1000)
    assert admission.max_tokens == 256
    assert admission.note == "[max_tokens lowered from 1000 to 256: this client's limit (max_tokens = 256).]"


def test_max_tokens_over_the_cap_is_refused_when_the_table_says_refuse() -> None:
    lim, _ = limits()
    with pytest.raises(ClientLimitReached) as refused:
        lim.admit(caller(max_tokens=256, over_max_tokens="refuse"), 1000)
    assert (refused.value.limit, refused.value.value) == ("max_tokens", 256)
    assert "max_tokens = 1000 is over" in str(refused.value) and "Ask for 256 or fewer" in str(refused.value)
    assert lim.in_flight("team-a") == 0


@pytest.mark.parametrize(("asked", "sent"), [(None, 256), (100, 100), (256, 256)])
def test_max_tokens_within_the_cap_is_kept_and_a_call_naming_none_gets_the_cap(asked: int | None, sent: int) -> None:
    lim, _ = limits()
    admission = lim.admit(caller(max_tokens=256, over_max_tokens="refuse"), asked)
    assert (admission.max_tokens, admission.note) == (sent, None)


def test_a_call_that_does_not_generate_has_no_max_tokens_to_cap() -> None:
    lim, _ = limits()
    admission = lim.admit(caller(max_tokens=256), None, generates=False)
    assert admission.max_tokens is None
