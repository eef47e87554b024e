"""The fair share end to end below MCP: `FairShare.call` around real calls to llama.cpp's server
(4 slots), directly and through the GGUF Cloud gateway, with its metrics, audit trail and limits.

The tools will wrap their upstream call exactly like `chat` below does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gguf_mcp.clients import Caller, ClientPolicy
from gguf_mcp.config import Deployment, Settings, load_settings
from gguf_mcp.dialects import CHAT
from gguf_mcp.errors import ClientLimitReached, UpstreamBusy
from gguf_mcp.fairshare import AuditLog, FairShare, Metrics
from gguf_mcp.fairshare.queue import FairQueue
from gguf_mcp.fairshare.slots import RETRY_S, Queues
from gguf_mcp.streams import ChatStream
from gguf_mcp.upstream import UpstreamClient
from tests.support.gateway import ACCOUNT_KEY, Gateway
from tests.support.llama import LlamaServer
from tests.support.upstream import open_upstream

PROMPT = "PROMPT-CANARY-5e1f: say something"
TEAM_A = Caller("team-a", ClientPolicy())
TEAM_B = Caller("team-b", ClientPolicy())


def direct(llama: LlamaServer) -> Settings:
    return load_settings({}, {"GGUF_BASE_URL": llama.url, "MODELSLAB_API_KEY": llama.api_key})


def via_gateway(gw: Gateway, tmp_path: Path, *deployments: str) -> Settings:
    toml = "".join(f'[deployments.{d}]\nbase_url = "{gw.base_url_for(d)}"\n' for d in deployments)
    path = tmp_path / "gguf-mcp.toml"
    path.write_text(toml)
    return load_settings({}, {"GGUF_MCP_CONFIG": str(path), "MODELSLAB_API_KEY": ACCOUNT_KEY})


@asynccontextmanager
async def fair_share(
    settings: Settings, tmp_path: Path, **kwargs: Any
) -> AsyncIterator[tuple[FairShare, Metrics, UpstreamClient]]:
    """A fair share with fresh metrics, an audit trail in `tmp_path`, and the upstream client it reads /props with."""
    metrics = Metrics(CollectorRegistry())
    audit = AuditLog.open(str(tmp_path / "audit.jsonl"))
    async with open_upstream(settings) as upstream:
        yield (
            FairShare(upstream, read_timeout=settings.timeout, metrics=metrics, audit=audit, **kwargs),
            metrics,
            upstream,
        )
    audit.close()


async def chat(
    fs: FairShare,
    upstream: UpstreamClient,
    dep: Deployment,
    caller: Caller,
    *,
    max_tokens: int | None = 4,
    started: list[str] | None = None,
    go: anyio.Event | None = None,
    **call: Any,
) -> str:
    """One streamed chat call wrapped as a tool wraps it (once admitted, it waits for `go` if given);
    returns the generated text."""
    async with fs.call(caller, dep, "chat", request_id="req-1", max_tokens=max_tokens, **call) as admitted:
        if started is not None:
            started.append(caller.name)
        if go is not None:
            await go.wait()
        body = {"model": "local", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": admitted.max_tokens}
        stream = ChatStream()
        async with aclosing(upstream.stream(dep, CHAT, body)) as events:
            async for event in events:
                if stream.add(event):
                    admitted.first_token()
        data = stream.response()
        usage = data.get("usage") or {}
        admitted.usage(usage.get("prompt_tokens"), usage.get("completion_tokens"), data.get("model"))
        return stream.text


def audit_lines(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.render()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, tuple(sorted(labels.items()))), 0.0)


# --- Slots ----------------------------------------------------------------------------------------


async def overlapping(queues: Queues, dep: Deployment) -> FairQueue:
    """The deployment's queue as a call sees it that arrives while another is in flight."""
    queue = await queues.get(dep)
    await queue.acquire("someone")
    try:
        return await queues.get(dep)
    finally:
        queue.release("someone")


async def test_the_slot_count_is_llama_servers_own(llama_server: LlamaServer, tmp_path: Path) -> None:
    settings = direct(llama_server)
    async with fair_share(settings, tmp_path) as (fs, metrics, _):
        queue = await overlapping(fs.queues, settings.deployments["default"])
        assert queue.slots == 4  # the fixture's --parallel 4, from GET /props
        assert sample(metrics, "gguf_mcp_deployment_slots", deployment="default") == 4


async def test_one_call_at_a_time_never_asks_for_the_slot_count(
    gw: Gateway, llama_server: LlamaServer, tmp_path: Path
) -> None:
    settings = via_gateway(gw, tmp_path, "dep")
    dep = settings.deployments["dep"]
    async with fair_share(settings, tmp_path) as (fs, _, upstream):
        for _ in range(3):
            await chat(fs, upstream, dep, TEAM_A, max_tokens=2)
        assert (await fs.queues.get(dep)).slots is None
        assert [r.path for r in gw.requests_for("dep")] == ["/v1/chat/completions"] * 3
        assert (await overlapping(fs.queues, dep)).slots == 4  # two at once: now it matters
    assert [r.path for r in gw.requests_for("dep")][3:] == ["/props"]


async def test_max_concurrency_overrides_the_server_and_props_is_never_asked(
    gw: Gateway, llama_server: LlamaServer, tmp_path: Path
) -> None:
    settings = via_gateway(gw, tmp_path, "dep")
    async with fair_share(settings, tmp_path, max_concurrency={"dep": 2}) as (fs, _, _):
        assert (await fs.queues.get(settings.deployments["dep"])).slots == 2
        assert (await overlapping(fs.queues, settings.deployments["dep"])).slots == 2
    assert [r.path for r in gw.requests_for("dep")] == []


async def test_a_deployment_without_props_is_not_queued_and_not_asked_again(gateway: Gateway, tmp_path: Path) -> None:
    gateway.add_canned_deployment("canned")  # answers /props with llama-server's own 404
    settings = via_gateway(gateway, tmp_path, "canned")
    dep = settings.deployments["canned"]
    async with fair_share(settings, tmp_path) as (fs, _, _):
        assert (await overlapping(fs.queues, dep)).slots is None
        assert (await overlapping(fs.queues, dep)).slots is None
    assert [r.path for r in gateway.requests_for("canned")] == ["/props"]


async def test_a_props_failure_that_may_heal_is_asked_again_a_minute_later(
    gw: Gateway, llama_server: LlamaServer, tmp_path: Path
) -> None:
    gw.fail_next("dep", 503)  # the pod is starting
    settings = via_gateway(gw, tmp_path, "dep")
    dep = settings.deployments["dep"]
    now = [0.0]
    async with open_upstream(settings) as upstream:
        queues = Queues(upstream, clock=lambda: now[0])
        assert (await overlapping(queues, dep)).slots is None
        now[0] = RETRY_S - 1
        assert (await overlapping(queues, dep)).slots is None
        assert len(gw.requests_for("dep")) == 1
        now[0] = RETRY_S
        assert (await overlapping(queues, dep)).slots == 4
    assert [r.path for r in gw.requests_for("dep")] == ["/props", "/props"]


# --- Calls: the record of each, whatever its outcome ----------------------------------------------


async def test_an_answered_call_is_counted_measured_and_recorded_without_its_text(
    llama_server: LlamaServer, tmp_path: Path
) -> None:
    settings = direct(llama_server)
    dep = settings.deployments["default"]
    async with fair_share(settings, tmp_path) as (fs, metrics, upstream):
        text = await chat(fs, upstream, dep, TEAM_A, max_tokens=6)
        hour_and_day = fs.limits.used("team-a")
        body, _ = metrics.render()
    (record,) = audit_lines(tmp_path)
    assert record["client"] == "team-a" and record["deployment"] == "default" and record["tool"] == "chat"
    assert record["outcome"] == "ok" and record["request_id"] == "req-1"
    assert record["output_tokens"] == 6 and record["input_tokens"] > 0
    assert record["queue_ms"] == 0.0 and record["duration_ms"] > 0
    assert hour_and_day == (record["input_tokens"] + 6,) * 2
    labels = {"deployment": "default", "tool": "chat", "client": "team-a", "outcome": "ok"}
    assert sample(metrics, "gguf_mcp_calls_total", **labels) == 1
    assert sample(metrics, "gguf_mcp_completion_tokens_total", **labels) == 6
    assert sample(metrics, "gguf_mcp_prompt_tokens_total", **labels) == record["input_tokens"]
    assert sample(metrics, "gguf_mcp_time_to_first_token_seconds_count", **labels) == 1
    assert sample(metrics, "gguf_mcp_queue_wait_seconds_count", **labels) == 1
    in_flight = {k: v for k, v in labels.items() if k != "outcome"}
    assert sample(metrics, "gguf_mcp_calls_in_flight", **in_flight) == 0
    trail = (tmp_path / "audit.jsonl").read_text()
    for secret in (llama_server.api_key, "PROMPT-CANARY-5e1f", text):
        assert secret not in trail and secret.encode() not in body


async def test_a_refused_call_sends_nothing_and_is_recorded_as_limit_reached(
    gw: Gateway, llama_server: LlamaServer, tmp_path: Path
) -> None:
    settings = via_gateway(gw, tmp_path, "dep")
    dep = settings.deployments["dep"]
    capped = Caller("capped", ClientPolicy(max_tokens=8, over_max_tokens="refuse"))
    async with fair_share(settings, tmp_path, max_concurrency={"dep": 4}) as (fs, metrics, upstream):
        with pytest.raises(ClientLimitReached):
            await chat(fs, upstream, dep, capped, max_tokens=100)
    assert gw.requests_for("dep") == []
    (record,) = audit_lines(tmp_path)
    assert record["outcome"] == "limit reached" and record["input_tokens"] is None
    labels = {"deployment": "dep", "tool": "chat", "client": "capped", "outcome": "limit reached"}
    assert sample(metrics, "gguf_mcp_calls_total", **labels) == 1
    assert sample(metrics, "gguf_mcp_calls_in_flight", deployment="dep", tool="chat", client="capped") == 0


async def test_a_call_waiting_past_its_deadline_is_saturated_and_sends_nothing(
    gw: Gateway, llama_server: LlamaServer, tmp_path: Path
) -> None:
    settings = via_gateway(gw, tmp_path, "dep")
    dep = settings.deployments["dep"]
    async with fair_share(settings, tmp_path, max_concurrency={"dep": 1}) as (fs, metrics, upstream):
        queue = await fs.queues.get(dep)
        await queue.acquire("someone")  # the one slot, busy
        with pytest.raises(UpstreamBusy) as busy:
            await chat(fs, upstream, dep, TEAM_B, deadline=0.05)
        queue.release("someone")
    assert "the call's 0.05 s deadline" in str(busy.value)
    assert gw.requests_for("dep") == []
    (record,) = audit_lines(tmp_path)
    assert record["outcome"] == "saturated" and record["queue_ms"] == 0.0
    labels = {"deployment": "dep", "tool": "chat", "client": "team-b", "outcome": "saturated"}
    assert sample(metrics, "gguf_mcp_calls_total", **labels) == 1
    assert sample(metrics, "gguf_mcp_queue_length", deployment="dep", client="team-b") == 0


async def test_a_cancelled_call_and_one_cut_by_its_deadline_are_recorded_as_such(
    llama_server: LlamaServer, tmp_path: Path
) -> None:
    settings = direct(llama_server)
    dep = settings.deployments["default"]
    async with fair_share(settings, tmp_path) as (fs, _, upstream):
        with anyio.CancelScope() as scope:
            async with fs.call(TEAM_A, dep, "chat", max_tokens=4) as call:
                call.usage(3, 1)  # what had arrived when the caller went away
                scope.cancel()
                await anyio.sleep_forever()
        async with fs.call(TEAM_A, dep, "complete", max_tokens=4) as call:
            call.usage(5, 2)
            call.stopped_at_deadline()
        await chat(fs, upstream, dep, TEAM_A)
    outcomes = [(r["tool"], r["outcome"], r["input_tokens"], r["output_tokens"]) for r in audit_lines(tmp_path)]
    assert outcomes[:2] == [("chat", "cancelled", 3, 1), ("complete", "deadline", 5, 2)]
    assert outcomes[2][:2] == ("chat", "ok")
    assert fs.limits.in_flight("team-a") == 0
    assert fs.limits.used("team-a")[0] == 3 + 1 + 5 + 2 + outcomes[2][2] + outcomes[2][3]


async def test_a_burst_from_one_client_does_not_hold_back_another(llama_server: LlamaServer, tmp_path: Path) -> None:
    """Four slots busy with A's calls and four more of A's waiting: B's call takes the next free slot.
    (A's calls start generating once B waits too, so that none can end before.)"""
    settings = direct(llama_server)
    dep = settings.deployments["default"]
    started: list[str] = []
    a_waiting: set[int] = set()
    all_waiting = anyio.Event()
    b_waiting = anyio.Event()
    heard: list[int] = []

    async def burst_call(n: int) -> None:
        async def waits(ahead: int) -> None:  # told first when the call starts waiting
            a_waiting.add(n)
            if len(a_waiting) == 4:
                all_waiting.set()

        await chat(fs, upstream, dep, TEAM_A, max_tokens=24, started=started, on_wait=waits, go=b_waiting)

    async def b_waits(ahead: int) -> None:
        heard.append(ahead)
        b_waiting.set()

    async with fair_share(settings, tmp_path) as (fs, metrics, upstream), anyio.create_task_group() as tg:
        for n in range(8):
            tg.start_soon(burst_call, n)
        await all_waiting.wait()
        tg.start_soon(lambda: chat(fs, upstream, dep, TEAM_B, max_tokens=4, started=started, on_wait=b_waits))
    assert started[:4] == ["team-a"] * 4
    assert started[4] == "team-b", started
    assert heard == [0]  # B waited, with nobody ahead
    assert sample(metrics, "gguf_mcp_queue_wait_seconds_count", deployment="default", tool="chat",
                  client="team-b", outcome="ok") == 1  # fmt: skip
