"""The fair queue: at most `slots` calls at once, clients in turn, and a call that stops waiting
leaves at once.

The order (`Rotation`) is pure and tested by its own prediction; the queue runs real anyio tasks,
each step settled until every task is blocked (no sleeps).
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field

import anyio
import anyio.abc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gguf_mcp.errors import UpstreamBusy
from gguf_mcp.fairshare.order import FirstCome, Rotation
from gguf_mcp.fairshare.queue import FairQueue


async def settle() -> None:
    """Run the other tasks until each one is blocked: anyio's `wait_all_tasks_blocked`, without its
    0.1 s poll on asyncio (these tasks wait on events only, never on I/O)."""
    me = asyncio.current_task()
    while True:
        await asyncio.sleep(0)
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        if all(t._fut_waiter is not None and not t._fut_waiter.done() for t in tasks):  # type: ignore[attr-defined]
            return


@dataclass(eq=False)
class Item:
    client: str


# --- The order, alone ---------------------------------------------------------------------------

Op = tuple[str, str, int]
ops = st.lists(st.tuples(st.sampled_from(["push", "pop", "remove"]), st.sampled_from("ABC"), st.integers(0, 99)))


def apply(order: Rotation[Item], waiting: list[Item], op: Op) -> None:
    kind, client, pick = op
    if kind == "push":
        item = Item(client)
        order.push(client, item)
        waiting.append(item)
    elif waiting and kind == "pop":
        _, item = order.pop()
        waiting.remove(item)
    elif waiting:
        item = waiting[pick % len(waiting)]
        order.remove(item.client, item)
        waiting.remove(item)


@given(ops)
@settings(max_examples=300, deadline=None)
def test_each_waiting_call_is_told_how_many_go_before_it(steps: list[Op]) -> None:
    order: Rotation[Item] = Rotation()
    waiting: list[Item] = []
    for op in steps:
        apply(order, waiting, op)
        for item in waiting:
            memo: dict[int, object] = {}
            future = copy.deepcopy(order, memo)
            mine = memo[id(item)]
            served = 0
            while future.pop()[1] is not mine:
                served += 1
            assert order.ahead(item.client, item) == served


@given(ops)
@settings(max_examples=300, deadline=None)
def test_a_client_is_served_first_come_and_never_twice_while_another_waits_longer(steps: list[Op]) -> None:
    order: Rotation[Item] = Rotation()
    waiting: list[Item] = []
    served_at: dict[str, int] = {}
    for turn, op in enumerate(steps):
        before = list(waiting)
        if op[0] == "pop" and waiting:
            _, item = order.pop()
            assert item is next(i for i in before if i.client == item.client), "not its client's oldest call"
            clients = {i.client for i in before}
            # Served least recently (or never) first: no waiting client was served after this one last was.
            mine = served_at.get(item.client, -1)
            assert all(served_at.get(c, -1) >= mine for c in clients), (item.client, served_at)
            served_at[item.client] = turn
            waiting.remove(item)
        else:
            apply(order, waiting, op)
    assert len(order) == len(waiting)


# --- The queue, with tasks ----------------------------------------------------------------------


class Recorded(Rotation[object]):
    """The real order, logging each call that starts waiting and each slot handed over (by client)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, str]] = []

    def push(self, client: str, item: object) -> None:
        self.log.append(("wait", client))
        super().push(client, item)

    def pop(self) -> tuple[str, object]:
        client, item = super().pop()
        self.log.append(("slot", client))
        return client, item


@dataclass(eq=False)
class Running:
    """One call in a test: holding a slot until `finish` is set, or waiting, or gone."""

    client: str
    finish: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    holding: bool = False
    done: bool = False


class Harness:
    def __init__(self, queue: FairQueue, tg: anyio.abc.TaskGroup) -> None:
        self.queue, self.tg = queue, tg
        self.calls: list[Running] = []
        self.peak = 0

    def start(self, client: str) -> Running:
        call = Running(client)
        self.calls.append(call)
        self.tg.start_soon(self._run, call)
        return call

    async def _run(self, call: Running) -> None:
        with call.scope:
            async with self.queue.slot(call.client):
                call.holding = True
                self.peak = max(self.peak, self.holding)
                await call.finish.wait()
                call.holding = False
        call.done = True

    async def play(self, kind: str, pick: int) -> Running | None:
        """One step of a script: a call arrives, one holding a slot finishes (returned), or one waiting is
        cancelled; then every task runs until it blocks."""
        holders = [c for c in self.calls if c.holding]
        waiters = [c for c in self.live if not c.holding]
        finished = None
        if kind == "arrive":
            self.start("ABC"[pick % 3])
        elif kind == "finish" and holders:
            finished = holders[pick % len(holders)]
            finished.finish.set()
        elif kind == "cancel" and waiters:
            waiters[pick % len(waiters)].scope.cancel()
        await settle()
        return finished

    @property
    def holding(self) -> int:
        return sum(c.holding for c in self.calls)

    @property
    def live(self) -> list[Running]:
        return [c for c in self.calls if not c.done]


Step = tuple[str, int]
steps = st.lists(st.tuples(st.sampled_from(["arrive", "finish", "cancel"]), st.integers(0, 99)), max_size=60)


@given(slots=st.integers(1, 4), script=steps)
@settings(max_examples=60, deadline=None)
async def test_never_more_than_slots_and_every_call_gets_one_or_leaves(slots: int, script: list[Step]) -> None:
    queue = FairQueue("dep", slots)
    async with anyio.create_task_group() as tg:
        h = Harness(queue, tg)
        for kind, pick in script:
            await h.play(kind, pick)
            assert h.holding <= slots
            # No slot idles while a call waits, and the queue's count is the truth.
            assert h.holding == min(slots, len(h.live)) == queue.busy
            assert queue.waiting == len(h.live) - h.holding
        with anyio.fail_after(10):  # a call left behind would hang here: fail instead
            while h.live:
                for call in h.live:
                    call.finish.set()
                await settle()
    assert h.peak <= slots
    assert queue.busy == 0
    assert queue.waiting == 0


finishes = st.lists(st.integers(0, 99), min_size=1, max_size=40)


@given(slots=st.integers(1, 4), burst=st.integers(5, 20), finishes=finishes)
@settings(max_examples=60, deadline=None)
async def test_a_one_at_a_time_client_waits_at_most_one_slot_turn_behind_a_burst(
    slots: int, burst: int, finishes: list[int]
) -> None:
    order = Recorded()
    queue = FairQueue("dep", slots, order=order)
    async with anyio.create_task_group() as tg:
        h = Harness(queue, tg)
        for _ in range(burst):
            h.start("A")
        await settle()
        b = h.start("B")
        await settle()
        for pick in finishes:
            holders = [c for c in h.calls if c.holding]
            if not holders:
                break
            finished = holders[pick % len(holders)]
            finished.finish.set()
            await settle()
            if finished is b:  # B calls again at once
                b = h.start("B")
                await settle()
        log = list(order.log)  # before the teardown's cancellations hand slots around
        tg.cancel_scope.cancel()
    # Every time B waited, the very next slot handed over was B's.
    for i, event in enumerate(log):
        if event == ("wait", "B"):
            slots_after = [client for kind, client in log[i + 1 :] if kind == "slot"]
            assert slots_after[:1] in ([], ["B"]), log


async def test_first_come_first_served_puts_the_one_call_behind_the_whole_burst() -> None:
    """What the fair order fixes: llama-server's own queue (first come) serves B after all of A."""
    queue = FairQueue("dep", 1, order=FirstCome())
    served: list[str] = []
    async with anyio.create_task_group() as tg:

        async def call(client: str) -> None:
            async with queue.slot(client):
                served.append(client)

        for client in "AAAAB":
            tg.start_soon(call, client)
            await settle()
    assert served == ["A", "A", "A", "A", "B"]


async def test_the_fair_order_serves_the_one_call_next() -> None:
    queue = FairQueue("dep", 1)
    served: list[str] = []
    release = anyio.Event()
    async with anyio.create_task_group() as tg:

        async def call(client: str) -> None:
            async with queue.slot(client):
                served.append(client)
                await release.wait()

        for client in "AAAAB":
            tg.start_soon(call, client)
            await settle()
        release.set()
    assert served == ["A", "B", "A", "A", "A"]


async def test_a_waiting_call_hears_its_place_when_it_starts_waiting_and_when_it_changes() -> None:
    queue = FairQueue("dep", 1)
    heard: list[int] = []

    async def tell(ahead: int) -> None:
        heard.append(ahead)

    holder_done = anyio.Event()
    async with anyio.create_task_group() as tg:

        async def call(client: str, done: anyio.Event, on_wait: object = None) -> None:
            async with queue.slot(client, on_wait=tell if on_wait else None):
                await done.wait()

        tg.start_soon(call, "A", holder_done)
        await settle()
        rest = anyio.Event()
        tg.start_soon(call, "A", rest, True)  # first in line
        await settle()
        tg.start_soon(call, "A", rest)  # behind it: its place does not change
        await settle()
        tg.start_soon(call, "B", rest)  # B was never served: it goes first
        await settle()
        assert heard == [0, 1]
        holder_done.set()  # the slot goes to B
        await settle()
        assert heard == [0, 1, 0]
        rest.set()


async def test_a_cancelled_waiting_call_leaves_at_once_and_nobody_is_skipped() -> None:
    queue = FairQueue("dep", 1)
    got: list[str] = []
    release = anyio.Event()
    async with anyio.create_task_group() as tg:

        async def call(client: str, scope: anyio.CancelScope) -> None:
            with scope:
                async with queue.slot(client):
                    got.append(client)
                    await release.wait()

        scopes = {client: anyio.CancelScope() for client in "HAB"}
        for client, scope in scopes.items():
            tg.start_soon(call, client, scope)
            await settle()
        assert queue.waiting == 2
        scopes["A"].cancel()
        await settle()
        assert queue.waiting == 1
        assert queue.busy == 1
        release.set()
    assert got == ["H", "B"]
    assert (queue.busy, queue.waiting) == (0, 0)


async def test_a_slot_handed_to_a_call_cancelled_before_it_ran_is_given_back() -> None:
    """The slot arrives while the call is still telling its place (a slow progress notification), and
    then the call is cancelled: the slot goes back, and to the next call."""
    queue = FairQueue("dep", 1)
    await queue.acquire("H")
    telling = anyio.Event()
    scope = anyio.CancelScope()

    async def slow_tell(ahead: int) -> None:
        telling.set()
        await anyio.sleep_forever()

    async def waiter() -> None:
        with scope:
            async with queue.slot("A", on_wait=slow_tell):
                pytest.fail("the cancelled call ran")

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await telling.wait()
        queue.release("H")  # hands the slot to the waiter, still inside on_wait ...
        assert queue.busy == 1
        scope.cancel()  # ... which is cancelled there
        await settle()
    assert (queue.busy, queue.waiting) == (0, 0)


async def test_a_wait_past_its_bound_is_the_saturated_error_and_leaves_the_queue() -> None:
    queue = FairQueue("dep-x", 2)
    await queue.acquire("H")
    await queue.acquire("H")
    with pytest.raises(UpstreamBusy) as caught:
        await queue.acquire("A", within=0.01, bound="the call's 0.01 s deadline")
    assert caught.value.label == "saturated"
    message = str(caught.value)
    assert "'dep-x'" in message and "0.01 s deadline" in message and "2 slots" in message, message
    assert "nothing was sent" in message
    assert (queue.busy, queue.waiting) == (2, 0)


async def test_more_slots_admit_waiting_calls_at_once() -> None:
    queue = FairQueue("dep", 1)
    async with anyio.create_task_group() as tg:
        release = anyio.Event()

        async def call() -> None:
            async with queue.slot("A"):
                await release.wait()

        for _ in range(4):
            tg.start_soon(call)
        await settle()
        assert (queue.busy, queue.waiting) == (1, 3)
        queue.slots = 3
        await settle()
        assert (queue.busy, queue.waiting) == (3, 1)
        queue.slots = None  # unknown: no limit
        await settle()
        assert (queue.busy, queue.waiting) == (4, 0)
        release.set()


async def test_the_queue_length_metric_hook_hears_every_start_and_stop_of_a_wait() -> None:
    changes: list[tuple[str, str, int]] = []
    queue = FairQueue("dep", 1, on_queue=lambda dep, tag, change: changes.append((dep, tag, change)))
    async with anyio.create_task_group() as tg:
        release = anyio.Event()
        scope = anyio.CancelScope()

        async def call(client: str, cancel: anyio.CancelScope | None = None) -> None:
            with cancel or anyio.CancelScope():
                async with queue.slot(client, tag=client.lower()):
                    await release.wait()

        tg.start_soon(call, "A")
        await settle()
        tg.start_soon(call, "B", scope)
        tg.start_soon(call, "C")
        await settle()
        scope.cancel()
        await settle()
        release.set()
    assert changes == [("dep", "b", 1), ("dep", "c", 1), ("dep", "b", -1), ("dep", "c", -1)]


# --- The grace: a slot held for a client whose last call just ended ----------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


GRACE = 1000.0
"""Long in real seconds, so that only the test's clock ends a grace: `tick` moves it and calls `expire`,
which is what a waiting call's own timer does when the grace is over."""

GraceStep = tuple[str, int]
grace_steps = st.lists(
    st.tuples(st.sampled_from(["arrive", "finish", "finish and return", "cancel", "tick"]), st.integers(0, 99)),
    max_size=60,
)


@given(slots=st.integers(1, 4), script=grace_steps)
@settings(max_examples=80, deadline=None)
async def test_a_slot_idles_while_calls_wait_only_when_held_within_its_grace(
    slots: int, script: list[GraceStep]
) -> None:
    clock = FakeClock()
    queue = FairQueue("dep", slots, grace=GRACE, clock=clock)
    async with anyio.create_task_group() as tg:
        h = Harness(queue, tg)
        for kind, pick in script:
            if kind == "tick":
                clock.now += GRACE * (pick % 3) / 2  # 0, half a grace, a whole one
                queue.expire()
                await settle()
            finished = await h.play(kind.removesuffix(" and return"), pick)
            if finished is not None and kind == "finish and return":  # its next call, one round trip later
                held_for_it = finished.client in queue.held
                back = h.start(finished.client)
                await settle()
                assert back.holding or not held_for_it, "a client back within its grace waits"
            held = queue.held
            live_clients = {c.client for c in h.live}
            assert queue.busy == h.holding + len(held) <= slots
            # A slot idles while a call waits only when it is held, and only within its grace ...
            if queue.waiting:
                assert queue.busy == slots, (queue.busy, held)
            assert all(until > clock.now for until in held.values()), (clock.now, held)
            # ... for a client with no call running or waiting.
            assert not held.keys() & live_clients, (held, live_clients)
            assert queue.waiting == len(h.live) - h.holding
        tg.cancel_scope.cancel()


async def test_a_client_back_within_its_grace_takes_its_slot_before_the_queued_calls() -> None:
    clock = FakeClock()
    queue = FairQueue("dep", 1, grace=GRACE, clock=clock)
    served: list[str] = []
    with anyio.fail_after(10):  # a slot held for ever would hang here: fail instead
        await served_in_turn(queue, clock, served)
    assert served == ["B1", "B2", "A1", "A2"]


async def served_in_turn(queue: FairQueue, clock: FakeClock, served: list[str]) -> None:
    async with anyio.create_task_group() as tg:
        done = {client: anyio.Event() for client in ("B1", "A1", "A2", "B2")}

        async def call(client: str, name: str) -> None:
            async with queue.slot(client):
                served.append(name)
                await done[name].wait()

        tg.start_soon(call, "B", "B1")
        await settle()
        for name in ("A1", "A2"):
            tg.start_soon(call, "A", name)
            await settle()
        done["B1"].set()  # B's one call ends while A's wait: its slot is held for it ...
        await settle()
        assert (served, queue.held) == (["B1"], {"B": GRACE})
        tg.start_soon(call, "B", "B2")  # ... and its next call takes it, ahead of A's
        await settle()
        assert served == ["B1", "B2"] and queue.held == {}
        done["B2"].set()  # held again: B does not come back, and its grace ends
        await settle()
        clock.now += GRACE
        queue.expire()
        for name in ("A1", "A2"):
            done[name].set()


async def test_a_held_slot_goes_to_the_waiting_calls_once_its_grace_is_over() -> None:
    """With the real clock: the waiting call's own timer gives the slot up (no test clock moves it)."""
    queue = FairQueue("dep", 1, grace=0.01)
    await queue.acquire("B")
    got = anyio.Event()

    async def a_call() -> None:
        async with queue.slot("A"):
            got.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(a_call)
        await settle()
        queue.release("B")  # B's last call ended while A waits: held for B, who never comes back
        assert queue.held.keys() == {"B"}
        with anyio.fail_after(10):  # a hold that never ends would hang here: fail instead
            await got.wait()
    assert (queue.busy, queue.waiting, queue.held) == (0, 0, {})


async def test_no_slot_is_held_when_nobody_else_waits() -> None:
    queue = FairQueue("dep", 2, grace=GRACE, clock=FakeClock())
    await queue.acquire("B")
    queue.release("B")
    assert (queue.busy, queue.held) == (0, {})
