"""The fair share through the tools, as users run gguf-mcp: named clients over HTTP (their tokens
in `[clients.*]` tables), the client `default` over stdio, llama.cpp's server behind the GGUF Cloud
gateway, the official MCP client.

Slots are kept busy on demand by holding requests at the gateway (`Held`): what reaches the
deployment, and in which order, is the gateway's log.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.types import CallToolResult

from tests.support.bridge import Bridge, connect_http
from tests.support.calls import Progress, text_of
from tests.support.fairshare import (
    PROMPT_CANARY,
    Held,
    Team,
    Waits,
    audit_lines,
    chat_bodies,
    chat_prompts,
    deployment_toml,
    fair_server,
    poll_until,
    prompt,
    samples,
    scrape,
    value,
)
from tests.support.gateway import ACCOUNT_KEY, Gateway
from tests.support.llama import LlamaServer

pytestmark = pytest.mark.anyio

SLOTS = "max_concurrency = 4"  # the fixture's llama.cpp runs 4; fixed so that no /props request meets a held fault


async def chat(client: Any, tag: str, progress: Any = None, **arguments: Any) -> CallToolResult:
    result: CallToolResult = await client.call_tool(
        "chat", {"messages": prompt(tag), "max_tokens": 4, **arguments}, progress_callback=progress
    )
    return result


def hold_slots(gw: Gateway, count: int = 4) -> threading.Event:
    release = threading.Event()
    gw.inject("dep", Held(release), count)
    return release


async def slots_busy(gw: Gateway, count: int = 4) -> None:
    await anyio.to_thread.run_sync(lambda: gw.wait_for_requests(count, timeout=30))


# --- The fair order --------------------------------------------------------------------------------


async def test_a_call_of_another_client_goes_before_a_bursts_queued_calls(
    gw: Gateway, llama_server: LlamaServer, tmp_path: Path
) -> None:
    team = Team({"a": "", "b": ""})
    release = hold_slots(gw)
    a_waits, b_waits = Waits(4), Waits(1)
    results: dict[str, CallToolResult] = {}

    async def call(client: Any, tag: str, waits: Waits) -> None:
        results[tag] = await chat(client, tag, waits.callback(tag))

    with fair_server(tmp_path, deployment_toml(gw, extra=SLOTS) + team.toml()) as server:
        async with (
            connect_http(server.url, team.tokens["a"]) as a,
            connect_http(server.url, team.tokens["b"]) as b,
            anyio.create_task_group() as tg,
        ):
            for n in range(8):  # A's burst: four take the slots (held at the gateway), four wait
                tg.start_soon(call, a, f"a{n}", a_waits)
            await slots_busy(gw)
            await a_waits.enough.wait()
            tg.start_soon(call, b, "b0", b_waits)  # B's one call arrives behind all of them
            await b_waits.enough.wait()
            release.set()
    assert all(not r.is_error for r in results.values()), results
    order = chat_prompts(gw)
    assert sorted(order[:4]) == sorted(a_waits.heard.keys() - a_waits.waiting)
    assert order[4] == "b0", order  # the first slot freed went to B, ahead of A's four queued calls
    (b_heard,) = [m for _, m in b_waits.heard["b0"] if m.startswith("waiting")]
    assert b_heard == "waiting for a free slot on dep: 0 ahead"
    # A's queued calls heard their place, again when B went ahead of them, then as they moved up.
    heard = {
        tag: [m.removeprefix("waiting for a free slot on dep: ") for _, m in a_waits.heard[tag]]
        for tag in a_waits.waiting
    }
    assert sorted(places[:2] for places in heard.values()) == [[f"{n} ahead", f"{n + 1} ahead"] for n in range(4)]
    for tag in a_waits.waiting:
        waiting = [p for p, m in a_waits.heard[tag] if m.startswith("waiting")]
        tokens = [p for p, m in a_waits.heard[tag] if not m.startswith("waiting")]
        assert waiting == sorted(set(waiting)) and all(p < 1 for p in waiting)  # growing, below the first token
        assert all(p >= 1 for p in tokens)


# --- A waiting call that stops waiting -----------------------------------------------------------


async def test_a_call_cancelled_while_queued_leaves_the_queue_at_once_and_is_never_sent(
    gw: Gateway, llama_server: LlamaServer, tmp_path: Path
) -> None:
    team = Team({"a": "", "ops": "metrics = true"})
    release = hold_slots(gw)
    waits = Waits(1)
    with fair_server(tmp_path, deployment_toml(gw, extra=SLOTS) + team.toml()) as server:
        async with connect_http(server.url, team.tokens["a"]) as a, anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(chat, a, f"held{n}")
            await slots_busy(gw)
            with anyio.CancelScope() as scope:
                tg.start_soon(lambda: cancel_when(waits, scope))
                await chat(a, "gone", waits.callback("gone"))
            assert scope.cancelled_caught
            # Left the queue while every slot is still busy: the server's gauge says so (no event to wait on).
            await anyio.to_thread.run_sync(lambda: poll_until(lambda: queued(server, team.tokens["ops"]) == 0))
            release.set()
    assert "gone" not in " ".join(chat_prompts(gw))
    (record,) = [r for r in audit_lines(tmp_path) if r["outcome"] == "cancelled"]
    assert (record["client"], record["tool"], record["input_tokens"]) == ("a", "chat", None)


async def cancel_when(waits: Waits, scope: anyio.CancelScope) -> None:
    await waits.enough.wait()
    scope.cancel()


def queued(server: Any, token: str) -> float:
    found = samples(scrape(server, token).text)
    return value(found, "gguf_mcp_queue_length", deployment="dep", client="a")


async def test_a_wait_past_the_calls_deadline_is_the_saturated_error_with_nothing_sent(
    gw: Gateway, llama_server: LlamaServer, tmp_path: Path
) -> None:
    team = Team({"a": ""})
    release = hold_slots(gw)
    with fair_server(tmp_path, deployment_toml(gw, extra=SLOTS) + team.toml()) as server:
        async with connect_http(server.url, team.tokens["a"]) as a, anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(chat, a, f"held{n}")
            await slots_busy(gw)
            late = await chat(a, "late", deadline=0.3)
            release.set()
    assert late.is_error
    text = text_of(late)
    assert "Deployment 'dep' had no free slot for 0.3 s (the call's 0.3 s deadline)" in text, text
    assert "its 4 slots stayed busy" in text and "nothing was sent" in text
    assert "late" not in " ".join(chat_prompts(gw))
    assert [r["outcome"] for r in audit_lines(tmp_path)].count("saturated") == 1


# --- A client's limits -----------------------------------------------------------------------------


async def test_each_limit_refuses_naming_itself_its_value_and_when_it_resets_with_nothing_sent(
    gw: Gateway, llama_server: LlamaServer, tmp_path: Path
) -> None:
    team = Team(
        {
            "single": "max_concurrent = 1",
            "strict": 'max_tokens = 3\nover_max_tokens = "refuse"',
            "hourly": "tokens_per_hour = 10",
            "daily": "tokens_per_day = 10",
        }
    )
    release = hold_slots(gw, 1)
    with fair_server(tmp_path, deployment_toml(gw, extra=SLOTS) + team.toml()) as server:
        texts: dict[str, str] = {}
        async with connect_http(server.url, team.tokens["single"]) as single, anyio.create_task_group() as tg:
            tg.start_soon(chat, single, "single-1")
            await slots_busy(gw, 1)
            texts["max_concurrent"] = text_of(await chat(single, "single-2"))
            release.set()
        async with connect_http(server.url, team.tokens["strict"]) as strict:
            texts["max_tokens"] = text_of(await chat(strict, "strict", max_tokens=20))
        for name, limit in (("hourly", "tokens_per_hour"), ("daily", "tokens_per_day")):
            async with connect_http(server.url, team.tokens[name]) as client:
                first = await chat(client, f"{name}-1")  # more than 10 tokens: the window is full
                assert not first.is_error
                texts[limit] = text_of(await chat(client, f"{name}-2"))
    assert texts["max_concurrent"].endswith(
        "Client 'single' already has 1 calls in flight (queued ones included), its limit (max_concurrent = 1); "
        "nothing was sent. Retry when one of them ends."
    )
    assert "max_tokens = 20 is over client 'strict''s limit (max_tokens = 3" in texts["max_tokens"]
    for limit, window in (("tokens_per_hour", "hour"), ("tokens_per_day", "24 hours")):
        text = texts[limit]
        assert f"in the last {window}, its limit ({limit} = 10); nothing was sent" in text, text
        assert " UTC (in " in text and "It frees up at " in text
    sent = " ".join(chat_prompts(gw))
    for refused in ("single-2", "strict", "hourly-2", "daily-2"):
        assert refused not in sent
    assert {r["outcome"] for r in audit_lines(tmp_path)} == {"ok", "limit reached"}


async def test_a_clients_max_tokens_lowers_the_call_and_says_so(
    gw: Gateway, llama_server: LlamaServer, tmp_path: Path
) -> None:
    team = Team({"capped": "max_tokens = 3"})
    with fair_server(tmp_path, deployment_toml(gw) + team.toml()) as server:
        async with connect_http(server.url, team.tokens["capped"]) as capped:
            lowered = await chat(capped, "asks-20", max_tokens=20)
            unset = await capped.call_tool("chat", {"messages": prompt("asks-none")})
            within = await chat(capped, "asks-2", max_tokens=2)
    sent = {tag: body["max_tokens"] for tag, body in chat_bodies(gw).items()}
    assert sent == {"asks-20": 3, "asks-none": 3, "asks-2": 2}
    assert text_of(lowered).endswith("[max_tokens lowered from 20 to 3: this client's limit (max_tokens = 3).]")
    assert (lowered.structured_content or {})["usage"]["completion_tokens"] <= 3
    assert "lowered" not in text_of(unset) + text_of(within)


# --- The audit trail ---------------------------------------------------------------------------------


async def test_each_finished_call_is_one_audit_line_with_the_requests_id_and_never_its_text(
    gw: Gateway, llama_server: LlamaServer, tmp_path: Path
) -> None:
    team = Team({"a": ""})
    request_ids: dict[str, str] = {}

    async def note_id(response: httpx2.Response) -> None:
        body = json.loads(response.request.content or b"{}")
        if body.get("method") == "tools/call":
            request_ids[json.dumps(body["params"]["arguments"])] = response.headers["x-request-id"]

    with fair_server(tmp_path, deployment_toml(gw) + team.toml()) as server:
        async with connect_http(server.url, team.tokens["a"], on_response=note_id) as a:
            plain = await chat(a, "plain")
            streamed = await a.call_tool(
                "messages", {"messages": prompt("streamed"), "max_tokens": 5}, progress_callback=Progress()
            )
            embedded = await a.call_tool("embed", {"input": f"embed {PROMPT_CANARY}"})
            unknown = await a.call_tool("chat", {"messages": prompt("nowhere"), "deployment": "nowhere"})
    assert not (plain.is_error or streamed.is_error or embedded.is_error) and unknown.is_error
    records = audit_lines(tmp_path)
    assert [(r["client"], r["deployment"], r["tool"], r["outcome"]) for r in records] == [
        ("a", "dep", "chat", "ok"),
        ("a", "dep", "messages", "ok"),
        ("a", "dep", "embed", "ok"),
    ]  # a call naming no deployment there is is refused before it is admitted: it used none
    assert sorted(r["request_id"] for r in records) == sorted(list(request_ids.values())[:3])
    usage = [(r.structured_content or {}).get("usage", {}) for r in (plain, streamed, embedded)]
    assert [(r["input_tokens"], r["output_tokens"]) for r in records] == [
        (usage[0]["prompt_tokens"], usage[0]["completion_tokens"]),
        (usage[1]["input_tokens"], usage[1]["output_tokens"]),
        (usage[2]["prompt_tokens"], None),
    ]
    for record in records:
        assert record.keys() == {
            "time", "request_id", "client", "deployment", "tool", "input_tokens", "output_tokens",
            "queue_ms", "duration_ms", "outcome",
        }  # fmt: skip
        assert record["queue_ms"] == 0.0 and record["duration_ms"] > 0
    trail = (tmp_path / "audit.jsonl").read_text()
    for secret in (PROMPT_CANARY, text_of(plain).strip(), ACCOUNT_KEY, llama_server.api_key, team.tokens["a"]):
        assert secret not in trail


# --- Over stdio: the client `default` ------------------------------------------------------------


async def test_over_stdio_the_default_clients_limits_and_the_audit_trail_apply(
    gw: Gateway, llama_server: LlamaServer, tmp_path: Path
) -> None:
    config = tmp_path / "gguf-mcp.toml"
    config.write_text(deployment_toml(gw) + "[clients.default]\nmax_tokens = 3\ntokens_per_hour = 1000\n")
    env = {"GGUF_MCP_CONFIG": str(config), "MODELSLAB_API_KEY": ACCOUNT_KEY}
    env["GGUF_MCP_AUDIT_LOG"] = str(tmp_path / "audit.jsonl")
    async with Bridge("stdio", tmp_path).connect(env) as client:
        first = await chat(client, "one", max_tokens=50)
        second = await chat(client, "two", Progress(), max_tokens=2)
    assert text_of(first).endswith("[max_tokens lowered from 50 to 3: this client's limit (max_tokens = 3).]")
    assert [body["max_tokens"] for body in chat_bodies(gw).values()] == [3, 2]
    records = audit_lines(tmp_path)
    assert [(r["client"], r["tool"], r["outcome"]) for r in records] == [("default", "chat", "ok")] * 2
    ids = [r["request_id"] for r in records]  # the calls' JSON-RPC ids
    assert all(i is not None and i.isdigit() for i in ids) and len(set(ids)) == 2, ids
    usage = (second.structured_content or {})["usage"]
    assert (records[1]["input_tokens"], records[1]["output_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
