"""Fault injection end to end: every way a deployment can fail ends in a clear error (or in success
after retries) within a bounded time, and the next call on the same server succeeds.

The gauntlet runs each fault of the table in one long-lived session (so "the server stays healthy"
is checked after every one) against the gateway emulator, in front of its canned deployment and
of llama.cpp's real server. Faults that need more than a gateway trick have their own tests: a
llama.cpp server killed mid-generation, a deployment that comes up while we retry, the retry
policy's timing read from the gateway's arrival timestamps, and a response that never ends.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc
import pytest
from mcp.types import CallToolResult

from tests.support.bridge import Bridge
from tests.support.calls import Progress, text_of
from tests.support.gateway import ACCOUNT_KEY, Exchange, Fault, Gateway
from tests.support.llama import LLAMA_KEY, LlamaServer, LlamaServerError, running_llama_server
from tests.support.proc import child_writing_to

USER = [{"role": "user", "content": "Hello there"}]
MiB = 1024 * 1024
NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
SSE = "text/event-stream"
# Slack on every time bound: two shared cores, three processes, and the machine's other tenants.
SLACK_S = 3.0


def sse(*events: str) -> bytes:
    return "".join(f"data: {e}\n\n" for e in events).encode()


def token_chunk(text: str) -> str:
    return json.dumps({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]})


async def until(condition: Callable[[], bool], within: float, what: str) -> None:
    """Poll `condition` (a log file, a record: nothing to wait on) until it holds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not seen after {within} s")
        await anyio.sleep(0.02)


# --- Faults the gateway does not have ------------------------------------------------------------


class TruncatedStream(Fault):
    """Relay `after_events` SSE events, then the first half of the next one; then drop the
    connection, or (`clean_end`) end the response properly, as a proxy that lost its upstream would."""

    def __init__(self, after_events: int, *, clean_end: bool) -> None:
        self.after_events, self.clean_end = after_events, clean_end

    async def answer(self, exchange: Exchange) -> None:
        async with exchange.open_upstream() as reply:
            await exchange.start(reply.status, reply.headers)
            sent = 0
            async with contextlib.aclosing(exchange.sse_events(reply)) as events:
                async for event in events:
                    if sent == self.after_events:
                        await exchange.write(event[: len(event) // 2])
                        break
                    await exchange.write(event)
                    sent += 1
        if self.clean_end:
            await exchange.finish()
        else:
            exchange.cut()


class EndlessBody(Fault):
    """A 200 whose body goes on and on: `prefix`, then 1 MiB chunks without a line break, until
    `limit` bytes or until the client hangs up. `sent` counts what went out."""

    def __init__(self, content_type: str, prefix: bytes, limit: int) -> None:
        self.content_type, self.prefix, self.limit = content_type, prefix, limit
        self.sent = 0

    async def answer(self, exchange: Exchange) -> None:
        await exchange.start(200, [(b"content-type", self.content_type.encode())])
        await exchange.write(self.prefix)
        chunk = b"x" * MiB
        while self.sent < self.limit:
            await exchange.write(chunk)
            self.sent += len(chunk)
        await exchange.finish()


# --- The gauntlet: one session, every fault, then a healthy call -------------------------------


@dataclass(frozen=True)
class Case:
    """One row of the fault table."""

    fault: str
    inject: tuple[Fault, ...]
    expect: str | None  # a phrase of the error the agent reads; None: the call succeeds
    requests: int  # how many requests reach the gateway, retries included
    within: float  # seconds, before slack
    tool: str = "chat"
    streamed: bool = False  # with a progress token, so gguf-mcp streams
    deployment: str = "main"
    at_least: float = 0.0
    also: tuple[str, ...] = field(default=())  # further phrases the error must contain


def error(status: int, n: int = 1, **kw: Any) -> tuple[Fault, ...]:
    return (Fault.error(status, **kw),) * n


CASES = (
    Case("deployment down (connection refused)", (), "could not be reached", 0, 3.5, deployment="down",
         also=("Check the URL and that the server is running", "gave up after 4 attempts")),
    Case("stalled after the headers (read time-out)", (Fault.stall(60),), "sent nothing for 1 s (read time-out)",
         1, 1.0, also=("Raise GGUF_MCP_TIMEOUT",)),
    Case("slow first byte, within the time-out", (Fault.delay_first_byte(0.5),), None, 1, 0.5, at_least=0.5),
    Case("slow first byte, past the time-out", (Fault.delay_first_byte(60),), "sent nothing for 1 s", 1, 1.0),
    Case("proxy's HTML 502 page, once", error(502, body=NGINX_502, content_type="text/html"), None, 2, 0.5),
    Case("proxy's HTML 502 page, every time", error(502, 4, body=NGINX_502, content_type="text/html"),
         "is not answering (HTTP 502: an HTML page titled '502 Bad Gateway': 502 Bad Gateway nginx)", 4, 3.5,
         also=("gave up after 4 attempts",)),
    Case("HTML page with 200 instead of a stream", error(200, body=b"<html>Welcome</html>", content_type="text/html"),
         "a body that is not an event stream (content-type text/html", 1, 0.0, streamed=True),
    Case("200 with a body that is not JSON", error(200, body=b'{"choices":[{"message":'),
         "a body that is not JSON (content-type application/json", 1, 0.0),
    Case("200 with JSON of another shape", error(200, body=b'{"object":"list","data":[]}'),
         "sent an answer that is not a chat completion with choices", 1, 0.0),
    Case("stream cut mid-event (connection dropped)", (TruncatedStream(3, clean_end=False),),
         "broke off mid-stream", 1, 0.0, streamed=True, also=("Partial output (",)),
    Case("stream ended cleanly without its final event", (TruncatedStream(3, clean_end=True),),
         "ended before its final event", 1, 0.0, streamed=True, also=("Partial output (",)),
    Case("stream cut after tokens (messages)", (Fault.cut_stream(4),), "mid-stream", 1, 0.0, tool="messages",
         streamed=True),
    Case("stream event that is not JSON", error(200, body=sse(token_chunk("a"), '{"choi'), content_type=SSE),
         "an event that is not JSON", 1, 0.0, streamed=True),
    Case("error event mid-stream", error(200, body=sse(token_chunk("a"), token_chunk("b"),
         '{"error":{"code":500,"message":"llama_decode failed","type":"server_error"}}'), content_type=SSE),
         "failed mid-answer: llama_decode failed", 1, 0.0, streamed=True, also=("Partial output (2 tokens): ab",)),
    Case("429 with Retry-After: 1", error(429, retry_after="1"), None, 2, 1.0, at_least=1.0),
    Case("503 storm that ends (3 x 503)", error(503, 3), None, 4, 3.5),
    Case("502/503/504 storm that does not end", error(502) + error(503) + error(504) + error(503),
         "is not ready (HTTP 503", 4, 3.5, also=("gave up after 4 attempts",)),
    # The answer had started, so the request may have run on the GPU: reported, never resent.
    Case("connection dropped after the headers", (Fault.cut_stream(0),), "dropped the connection", 1, 0.0),
    Case("500 from the deployment", error(500), "failed (HTTP 500): Internal server error.", 1, 0.0),
    Case("embed during a 503, once", error(503), None, 2, 0.5, tool="embed"),
    Case("complete streamed, stream cut", (Fault.cut_stream(3),), "mid-stream", 1, 0.0, tool="complete",
         streamed=True),
)  # fmt: skip

ARGS: dict[str, dict[str, Any]] = {
    "chat": {"messages": USER, "max_tokens": 8},
    "messages": {"messages": USER, "max_tokens": 8},
    "complete": {"prompt": "Once upon a time", "max_tokens": 8},
    "embed": {"input": "hello"},
}


@dataclass
class Row:
    case: Case
    seconds: float
    saw: str
    problems: list[str]


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback URL that refuses connections: its port is bound (so nobody else takes it), not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


async def run_case(client: Any, gateway: Gateway, case: Case) -> Row:
    for fault in case.inject:
        gateway.inject("dep", fault)
    before = len(gateway.requests_for("dep"))
    args = {**ARGS[case.tool], "deployment": case.deployment}
    started = time.monotonic()
    with anyio.fail_after(case.within + 30):
        result = await client.call_tool(case.tool, args, progress_callback=Progress() if case.streamed else None)
    seconds = time.monotonic() - started
    saw, problems = text_of(result), []
    if case.expect is None and result.is_error:
        problems.append(f"expected success, got {saw!r}")
    if case.expect is not None:
        if not result.is_error:
            problems.append(f"expected an error, got success {saw[:80]!r}")
        problems += [f"{phrase!r} not in {saw!r}" for phrase in (case.expect, *case.also) if phrase not in saw]
    sent = len(gateway.requests_for("dep")) - before
    if sent != case.requests:
        problems.append(f"{sent} requests reached the gateway, expected {case.requests}")
    if not case.at_least <= seconds <= case.within + SLACK_S:
        problems.append(f"took {seconds:.2f} s, expected {case.at_least}..{case.within} s (+{SLACK_S} s slack)")
    if gateway.pending_faults("dep"):
        problems.append(f"{gateway.pending_faults('dep')} injected faults were never consumed")
    healthy = await client.call_tool("chat", {"messages": USER, "max_tokens": 2})
    if healthy.is_error:
        problems.append(f"the next call failed: {text_of(healthy)!r}")
    return Row(case, seconds, saw if result.is_error else "success", problems)


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n{title}\n| fault | what the agent sees | requests | time |\n|---|---|---|---|")
    for row in rows:
        seen = row.saw if len(row.saw) < 160 else row.saw[:157] + "..."
        print(f"| {row.case.fault} | {seen} | {row.case.requests} | {row.seconds:.2f} s |")


@pytest.mark.parametrize(
    ("transport", "upstream"),
    [("stdio", "canned"), ("http", "canned"), ("stdio", "llama")],
    ids=["stdio-canned", "http-canned", "stdio-llama"],
)
async def test_every_fault_ends_clearly_in_bounded_time_and_the_next_call_succeeds(
    transport: Literal["stdio", "http"],
    upstream: str,
    gateway: Gateway,
    llama_server: LlamaServer,
    refused_url: str,
    tmp_path: Path,
) -> None:
    if upstream == "canned":
        gateway.add_canned_deployment("dep")
    else:
        gateway.add_deployment("dep", llama_server.url, llama_server.api_key)
    config = tmp_path / "gauntlet.toml"
    config.write_text(
        f'default = "main"\n[deployments.main]\nbase_url = "{gateway.base_url_for("dep")}"\n'
        f'[deployments.down]\nbase_url = "{refused_url}"\n'
    )
    env = {
        "GGUF_MCP_CONFIG": str(config),
        "MODELSLAB_API_KEY": ACCOUNT_KEY,
        "GGUF_MCP_TIMEOUT": "1",
        "GGUF_MCP_MAX_RETRIES": "3",
    }
    bridge = Bridge(transport, tmp_path)
    rows = []
    async with bridge.connect(env) as client:
        for case in CASES:
            rows.append(await run_case(client, gateway, case))
    print_table(f"{transport}, {upstream} deployment", rows)
    failed = [f"{row.case.fault}: {'; '.join(row.problems)}" for row in rows if row.problems]
    assert not failed, "\n".join(failed)
    assert "Traceback" not in bridge.stderr()


# --- A llama.cpp server killed mid-generation ----------------------------------------------------


@pytest.fixture
def doomed_llama(tiny_model_path: Path, tmp_path: Path) -> Iterator[tuple[LlamaServer, int]]:
    """A private llama.cpp server and its pid, for a test to kill (its death is then no error)."""
    log = tmp_path / "doomed-llama.log"
    started = False
    try:
        with running_llama_server(tiny_model_path, LLAMA_KEY, embeddings=False, log_path=log) as server:
            started = True
            yield server, child_writing_to(log)
    except LlamaServerError:
        if not started:
            raise


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "plain"])
@pytest.mark.parametrize("via", ["gateway", "direct"])
async def test_a_llama_server_killed_mid_generation_is_reported_and_the_bridge_carries_on(
    via: str,
    streamed: bool,
    doomed_llama: tuple[LlamaServer, int],
    gateway: Gateway,
    tiny_model_path: Path,
    tmp_path: Path,
) -> None:
    server, pid = doomed_llama
    gateway.add_deployment("dep", server.url, server.api_key)
    gateway.add_canned_deployment("healthy")
    doomed_url = gateway.base_url_for("dep") if via == "gateway" else server.url
    config = tmp_path / "doomed.toml"
    config.write_text(
        f'[deployments.doomed]\nbase_url = "{doomed_url}"\n'
        f'api_key_env = "{"MODELSLAB_API_KEY" if via == "gateway" else "LLAMA_KEY"}"\n'
        f'[deployments.healthy]\nbase_url = "{gateway.base_url_for("healthy")}"\n'
    )
    env = {
        "GGUF_MCP_CONFIG": str(config),
        "MODELSLAB_API_KEY": ACCOUNT_KEY,
        "LLAMA_KEY": LLAMA_KEY,
        "GGUF_MCP_MAX_RETRIES": "1",
    }
    long_answer = {"messages": USER, "max_tokens": 2000, "deployment": "doomed"}
    bridge = Bridge("stdio", tmp_path)
    async with bridge.connect(env) as client:
        progress = Progress()
        result: list[CallToolResult] = []
        killed_at = 0.0

        async def call() -> None:
            result.append(await client.call_tool("chat", long_answer, progress_callback=progress if streamed else None))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            if streamed:
                await progress.first.wait()
            else:
                busy = await anyio.to_thread.run_sync(lambda: wait_until(lambda: not server.is_idle(), 10))
                assert busy, "llama.cpp never started generating"
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
        to_error = time.monotonic() - killed_at
        (killed,) = result
        while_down = await client.call_tool("chat", {**long_answer, "max_tokens": 2})
        healthy = await client.call_tool("chat", {"messages": USER, "max_tokens": 2, "deployment": "healthy"})
        recovered = None
        if via == "gateway":  # the deployment restarts: same URL for the bridge, a new llama-server behind it
            with running_llama_server(tiny_model_path, LLAMA_KEY, embeddings=False) as restarted:
                gateway.add_deployment("dep", restarted.url, restarted.api_key)
                recovered = await client.call_tool("chat", {**long_answer, "max_tokens": 2})
    how = "streamed" if streamed else "plain"
    print(f"\nkilled mid-generation ({via}, {how}): {to_error:.2f} s: {text_of(killed)}")
    print(f"while down: {text_of(while_down)}")
    assert killed.is_error
    if streamed:
        # Tokens had reached the caller: reported with the partial text, never resent.
        assert re.search(r"broke off mid-stream|ended before its final event", text_of(killed))
        assert "Partial output (" in text_of(killed)
    elif via == "gateway":
        assert "is not answering (HTTP 502" in text_of(killed)
    else:
        assert re.search(r"could not be reached|dropped the connection", text_of(killed))
    assert to_error < 5 + SLACK_S
    assert while_down.is_error
    down_phrase = "is not answering (HTTP 502" if via == "gateway" else "could not be reached"
    assert down_phrase in text_of(while_down)
    assert "gave up after 2 attempts" in text_of(while_down)
    assert not healthy.is_error, "the bridge serves its other deployments meanwhile"
    assert recovered is None or not recovered.is_error, "the restarted deployment answers at once"
    if via == "gateway" and streamed:
        # Exactly one generation request for the killed call: a broken stream is never retried.
        chats = [r for r in gateway.requests_for("dep") if r.path == "/v1/chat/completions"]
        assert len(chats) == 1 + 2 + (recovered is not None)
    assert "Traceback" not in bridge.stderr()


def wait_until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # polling llama-server's /slots: it has no event to wait on
    return True


# --- A deployment that comes up while the bridge retries ----------------------------------------


async def test_a_deployment_that_comes_up_during_the_retries_is_reached(tmp_path: Path) -> None:
    # A gateway whose socket is bound but not yet listening: connections are refused until it starts.
    late = Gateway(ACCOUNT_KEY)
    late.add_canned_deployment("dep")
    env = {"GGUF_BASE_URL": late.base_url_for("dep"), "MODELSLAB_API_KEY": ACCOUNT_KEY, "GGUF_MCP_MAX_RETRIES": "10"}
    bridge = Bridge("stdio", tmp_path)
    try:
        async with bridge.connect(env) as client:
            result: list[CallToolResult] = []

            async def call() -> None:
                result.append(await client.call_tool("chat", {"messages": USER, "max_tokens": 2}))

            async with anyio.create_task_group() as tg:
                started = time.monotonic()
                tg.start_soon(call)
                # The first refusal is announced with its retry.
                await until(lambda: "ConnectionFailed" in bridge.stderr(), 30, "a refused connection")
                late.__enter__()
                up_at = time.monotonic()
            done_at = time.monotonic()
    finally:
        late.__exit__(None, None, None)
    print(f"\ndown then up: first refusal seen after {up_at - started:.2f} s; answered {done_at - up_at:.2f} s later")
    (answer,) = result
    assert not answer.is_error, text_of(answer)
    assert len(late.requests) == 1
    # Backoff attempt n waits at most min(10, 0.5 * 2**n) s; the first retries after start-up come quickly.
    assert done_at - up_at < 10 + SLACK_S


# --- The retry policy, timed by the gateway ------------------------------------------------------


def gaps(gateway: Gateway, deployment: str = "dep") -> list[float]:
    at = [r.at for r in gateway.requests_for(deployment)]
    return [b - a for a, b in itertools.pairwise(at)]


@pytest.fixture
def canned(gateway: Gateway) -> Gateway:
    gateway.add_canned_deployment("dep")
    return gateway


def canned_env(gateway: Gateway, **extra: str) -> dict[str, str]:
    return {"GGUF_BASE_URL": gateway.base_url_for("dep"), "MODELSLAB_API_KEY": ACCOUNT_KEY, **extra}


async def test_backoff_is_exponential_with_full_jitter(canned: Gateway, tmp_path: Path) -> None:
    caps = [0.5, 1.0, 2.0]  # base 0.5 s, doubling: retry n waits uniform(0, 0.5 * 2**n)
    waits: list[tuple[float, float]] = []
    async with Bridge("stdio", tmp_path).connect(canned_env(canned, GGUF_MCP_MAX_RETRIES="3")) as client:
        for _ in range(3):
            canned.clear()
            canned.fail_next("dep", 503, count=3)
            result = await client.call_tool("chat", {"messages": USER, "max_tokens": 2})
            assert not result.is_error, text_of(result)
            measured = gaps(canned)
            assert len(measured) == 3
            waits += zip(measured, caps, strict=True)
    print("\nbackoff gaps (s, cap):", [(round(w, 3), c) for w, c in waits])
    for wait, cap in waits:
        assert wait <= cap + 0.5, f"waited {wait:.2f} s where the cap is {cap} s"
    # Full jitter: anywhere from 0 to the cap. Plain exponential backoff would wait the cap every
    # time; 9 uniform draws all landing in the top fifth happens once in two million runs.
    assert any(wait < 0.8 * cap for wait, cap in waits)


async def test_retry_after_sets_the_wait(canned: Gateway, tmp_path: Path) -> None:
    canned.fail_next("dep", 429, retry_after="1")
    canned.fail_next("dep", 503, retry_after="2")
    async with Bridge("stdio", tmp_path).connect(canned_env(canned)) as client:
        result = await client.call_tool("chat", {"messages": USER, "max_tokens": 2})
    assert not result.is_error
    first, second = gaps(canned)
    # The server's Retry-After wins over a shorter jittered backoff (at most 0.5 s, then 1 s, here).
    assert 1.0 <= first <= 1.0 + 0.5
    assert 2.0 <= second <= 2.0 + 0.5


async def test_a_retry_after_longer_than_the_cap_is_reported_at_once(canned: Gateway, tmp_path: Path) -> None:
    canned.fail_next("dep", 429, retry_after="3600")
    async with Bridge("stdio", tmp_path).connect(canned_env(canned)) as client:
        result = await client.call_tool("chat", {"messages": USER, "max_tokens": 2})
        after = await client.call_tool("chat", {"messages": USER, "max_tokens": 2})
    assert result.is_error
    assert "It asks to wait 3600 s before retrying." in text_of(result)
    assert not after.is_error
    assert len(canned.requests_for("dep")) == 2


@pytest.fixture
def with_llama_tools(canned: Gateway, llama_tool_server: LlamaServer, tmp_path: Path) -> dict[str, str]:
    canned.add_deployment("llama", llama_tool_server.url, llama_tool_server.api_key)
    config = tmp_path / "two.toml"
    config.write_text(
        f'[deployments.canned]\nbase_url = "{canned.base_url_for("dep")}"\n'
        f'[deployments.llama]\nbase_url = "{canned.base_url_for("llama")}"\n'
    )
    return {"GGUF_MCP_CONFIG": str(config), "MODELSLAB_API_KEY": ACCOUNT_KEY, "GGUF_MCP_MAX_RETRIES": "3"}


BAD_TOOL_CALL = [
    *USER,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}],
    },
    {"role": "tool", "tool_call_id": "1", "content": "ok"},
]


async def test_deterministic_failures_are_never_retried(
    canned: Gateway, with_llama_tools: dict[str, str], tmp_path: Path
) -> None:
    async with Bridge("stdio", tmp_path).connect(with_llama_tools) as client:
        for status in (400, 401, 403, 404, 409, 413, 422, 500, 501):
            canned.clear()
            canned.fail_next("dep", status)
            result = await client.call_tool("chat", {"messages": USER, "max_tokens": 2, "deployment": "canned"})
            assert result.is_error
            assert f"HTTP {status}" in text_of(result)
            assert len(canned.requests_for("dep")) == 1, f"HTTP {status} was retried"
        # llama.cpp's own deterministic failures, straight from its server code.
        llama_errors: dict[str, dict[str, Any]] = {
            "Failed to parse tool call arguments as JSON": {"messages": BAD_TOOL_CALL},
            "Failed to parse tools": {"messages": USER, "tools": [{"name": "no type"}]},
            "image input is not supported": {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        }
        for phrase, args in llama_errors.items():
            canned.clear()
            result = await client.call_tool("chat", {**args, "max_tokens": 2, "deployment": "llama"})
            assert result.is_error
            assert "failed (HTTP 500)" in text_of(result) and phrase in text_of(result)
            assert len(canned.requests_for("llama")) == 1, f"{phrase!r} was retried"


async def test_a_stream_that_broke_after_tokens_is_never_resent(canned: Gateway, tmp_path: Path) -> None:
    canned.inject("dep", Fault.cut_stream(3))
    async with Bridge("stdio", tmp_path).connect(canned_env(canned, GGUF_MCP_MAX_RETRIES="5")) as client:
        result = await client.call_tool("chat", {"messages": USER, "max_tokens": 8}, progress_callback=Progress())
    assert result.is_error
    assert "Partial output (" in text_of(result)
    assert len(canned.requests_for("dep")) == 1


@contextlib.asynccontextmanager
async def hanging_up_server(serve_after: int | None = None) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server that closes each connection without a byte of response, as llama-server does
    with a kept-alive connection it has retired; from connection `serve_after` on it answers a
    chat completion instead. Yields its URL and the list of connections accepted so far."""
    accepted: list[int] = []
    body = json.dumps({"choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}]}).encode()

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            accepted.append(len(accepted) + 1)
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)[1])  # type: ignore[index]
            while len(rest) < length:  # read it all: closing with unread bytes would send a reset
                rest += await stream.receive()
            if serve_after is not None and len(accepted) >= serve_after:
                head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
                await stream.send(head + body)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield f"http://127.0.0.1:{port}", accepted
        tg.cancel_scope.cancel()


async def test_the_attempts_reported_are_the_requests_sent(tmp_path: Path) -> None:
    async with hanging_up_server() as (url, accepted):
        env = {"GGUF_BASE_URL": url, "GGUF_MCP_MAX_RETRIES": "3"}
        async with Bridge("stdio", tmp_path).connect(env) as client:
            result = await client.call_tool("chat", {"messages": USER, "max_tokens": 2})
    assert result.is_error
    # One immediate resend (a retired kept-alive connection looks exactly like this), which is not
    # one of the retry policy's, then its 3 retries: 5 requests in all, and the text says so.
    assert len(accepted) == 5
    assert "gave up after 5 attempts" in text_of(result), text_of(result)


async def test_a_connection_closed_before_any_response_is_resent_once_at_once(tmp_path: Path) -> None:
    async with hanging_up_server(serve_after=2) as (url, accepted):
        env = {"GGUF_BASE_URL": url, "GGUF_MCP_MAX_RETRIES": "0"}
        async with Bridge("stdio", tmp_path).connect(env) as client:
            result = await client.call_tool("chat", {"messages": USER, "max_tokens": 2})
    assert not result.is_error, text_of(result)
    assert len(accepted) == 2


async def test_hundreds_of_plain_and_streamed_calls_on_pooled_connections_all_succeed(
    llama_server: LlamaServer, tmp_path: Path
) -> None:
    # Past llama.cpp's 100 requests per kept-alive connection, mixing plain and streamed answers.
    env = {"GGUF_BASE_URL": llama_server.url, "MODELSLAB_API_KEY": llama_server.api_key, "GGUF_MCP_MAX_RETRIES": "0"}
    async with Bridge("stdio", tmp_path).connect(env) as client:
        results = []
        for i in range(230):  # plain and streamed calls on the same pooled connections
            progress = Progress() if i % 2 else None
            results.append(
                await client.call_tool("chat", {"messages": USER, "max_tokens": 1}, progress_callback=progress)
            )
    assert [text_of(r) for r in results if r.is_error] == []


# --- A response that never ends ------------------------------------------------------------------

# Recommended cap on what gguf-mcp reads of one response (see the issue 6 report): generous for any
# chat, messages or completion answer (bounded by the context) and for embeddings of a large batch.
RESPONSE_CAP = 32 * MiB


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
async def test_an_endless_response_is_abandoned_at_the_size_cap(
    canned: Gateway, tmp_path: Path, streamed: bool
) -> None:
    endless = (
        EndlessBody(SSE, b"data: ", RESPONSE_CAP + 16 * MiB)
        if streamed
        else EndlessBody("application/json", b'{"choices":[{"message":{"content":"', RESPONSE_CAP + 16 * MiB)
    )
    canned.inject("dep", endless)
    async with Bridge("stdio", tmp_path).connect(canned_env(canned)) as client:
        started = time.monotonic()
        result = await client.call_tool(
            "chat", {"messages": USER, "max_tokens": 8}, progress_callback=Progress() if streamed else None
        )
        elapsed = time.monotonic() - started
        after = await client.call_tool("chat", {"messages": USER, "max_tokens": 2})
    print(f"\nendless body ({'streamed' if streamed else 'plain'}): {elapsed:.2f} s, {endless.sent} bytes sent: ")
    print(text_of(result)[:300])
    assert not after.is_error
    assert result.is_error
    assert re.search(r"too large|larger than|exceed", text_of(result), re.IGNORECASE), text_of(result)
    # The emulator's writes land in loopback and uvicorn buffers, so how much it "sent" says nothing
    # about what gguf-mcp read; the error names the cap and arrives long before 48 MiB would stream.
    assert elapsed < 10
