"""The upstream client, unit by unit, through httpx's MockTransport (no sockets, no SDK).

What is proven here is the client's own rules: which failures are retried and how long it
waits, the one resend of a request that provably never reached the server, that no redirect is
ever followed, the size caps, and that an echoed key never leaves it, however it is spelled or
split. The end-to-end suites prove the same against real servers.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import anyio
import httpx2
import pytest

from gguf_mcp.config import Settings, load_settings
from gguf_mcp.dialects import CHAT, MESSAGES, MODELS
from gguf_mcp.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DeploymentNotReady,
    DeploymentUnreachable,
    InvalidResponse,
    RateLimited,
    Redirected,
    RequestRejected,
    ResponseTooLarge,
    StreamInterrupted,
    UpstreamError,
)
from gguf_mcp.upstream import MAX_BODY, MAX_EVENT, RetryPolicy, UpstreamClient, _failure
from tests.support.raw_http import not_http, raw_http_server
from tests.support.upstream import open_upstream

KEY = "sk-canary-upstream-7f3a9c1e5b"
BASE = "http://deployment.test/api/gguf/dep"
BODY = {"model": "local", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
FAST = RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.05, max_total=1.0)

Handler = Callable[[httpx2.Request], httpx2.Response]


def settings() -> Settings:
    return load_settings({}, {"GGUF_BASE_URL": BASE, "MODELSLAB_API_KEY": KEY})


def client(handler: Handler, retry: RetryPolicy = FAST) -> UpstreamClient:
    s = settings()
    return UpstreamClient(httpx2.AsyncClient(transport=httpx2.MockTransport(handler)), s, retry)


def chat_answer(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


def sse(*events: object) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


def delta(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


class Recorder:
    """A handler that answers from a list, one per request, and keeps every request."""

    def __init__(self, *answers: httpx2.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def dep(upstream: UpstreamClient) -> Any:
    return settings().deployments["default"]


# --- Auth per protocol ----------------------------------------------------------------------------


async def test_openai_routes_get_a_bearer_and_anthropic_gets_x_api_key() -> None:
    rec = Recorder(httpx2.Response(200, json=chat_answer("ok")))
    upstream = client(rec)
    await upstream.post(dep(upstream), CHAT, BODY)
    await upstream.post(dep(upstream), MESSAGES, BODY)
    openai, anthropic = rec.requests
    assert openai.headers["authorization"] == f"Bearer {KEY}" and "x-api-key" not in openai.headers
    assert anthropic.headers["x-api-key"] == KEY and "authorization" not in anthropic.headers
    assert anthropic.headers["anthropic-version"] == "2023-06-01"
    assert str(openai.url) == BASE + CHAT.route


# --- Retries --------------------------------------------------------------------------------------


async def test_a_deployment_that_becomes_ready_is_retried_until_it_answers() -> None:
    rec = Recorder(httpx2.Response(503), httpx2.Response(502), httpx2.Response(200, json=chat_answer("ok")))
    upstream = client(rec)
    assert (await upstream.post(dep(upstream), CHAT, BODY))["choices"][0]["message"]["content"] == "ok"
    assert len(rec.requests) == 3


async def test_retries_stop_at_the_policy_and_say_how_many_attempts() -> None:
    rec = Recorder(httpx2.Response(503, json={"error": {"message": "starting"}}))
    upstream = client(rec)
    with pytest.raises(DeploymentNotReady) as info:
        await upstream.post(dep(upstream), CHAT, BODY)
    assert len(rec.requests) == 4
    assert str(info.value).endswith("(gave up after 4 attempts)")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 500])
async def test_deterministic_failures_are_sent_once(status: int) -> None:
    rec = Recorder(httpx2.Response(status, json={"error": {"message": "no"}}))
    upstream = client(rec)
    with pytest.raises(Exception, match=f"HTTP {status}"):
        await upstream.post(dep(upstream), CHAT, BODY)
    assert len(rec.requests) == 1


async def test_retry_after_is_honoured_and_a_longer_one_is_reported_at_once() -> None:
    short = Recorder(httpx2.Response(429, headers={"retry-after": "0.2"}), httpx2.Response(200, json=chat_answer("")))
    upstream = client(short, RetryPolicy(max_retries=3, base_delay=0.001, max_delay=1.0))
    started = anyio.current_time()
    await upstream.post(dep(upstream), CHAT, BODY)
    assert anyio.current_time() - started >= 0.2  # waited as asked, not the policy's 1 ms
    long = Recorder(httpx2.Response(429, headers={"retry-after": "3600"}))
    upstream = client(long)
    with pytest.raises(RateLimited, match="asks to wait 3600 s"):
        await upstream.post(dep(upstream), CHAT, BODY)
    assert len(long.requests) == 1


def test_the_policy_backs_off_exponentially_with_full_jitter_and_a_total_bound() -> None:
    policy = RetryPolicy(max_retries=5, base_delay=0.5, max_delay=10.0, max_total=60.0)
    error = DeploymentNotReady("x")
    for attempt in range(5):
        for _ in range(50):
            wait = policy.delay(attempt, error, elapsed=0.0)
            assert wait is not None and 0 <= wait <= min(10.0, 0.5 * 2**attempt)
    assert policy.delay(5, error, 0.0) is None
    assert all((policy.delay(0, error, elapsed=59.99) or 0) <= 0.01 for _ in range(50))  # never past the total
    assert policy.delay(0, AuthenticationFailed("x"), 0.0) is None


# --- The stale-connection resend ------------------------------------------------------------------


async def test_a_connection_found_dead_before_any_answer_is_resent_once_at_once() -> None:
    dead = httpx2.RemoteProtocolError("Server disconnected without sending a response.")
    rec = Recorder(dead, httpx2.Response(200, json=chat_answer("ok")))
    upstream = client(rec, RetryPolicy(0))  # no retries: only the resend rule may send it twice
    await upstream.post(dep(upstream), CHAT, BODY)
    assert len(rec.requests) == 2


async def test_only_one_resend_and_never_for_a_connection_that_broke_mid_answer() -> None:
    dead = httpx2.RemoteProtocolError("Server disconnected without sending a response.")
    rec = Recorder(dead, dead, httpx2.Response(200, json=chat_answer("ok")))
    upstream = client(rec, RetryPolicy(0))
    with pytest.raises(ConnectionFailed):
        await upstream.post(dep(upstream), CHAT, BODY)
    assert len(rec.requests) == 2
    broken = Recorder(httpx2.RemoteProtocolError("peer closed connection without sending complete message body"))
    upstream = client(broken, RetryPolicy(0))
    with pytest.raises(ConnectionFailed):
        await upstream.post(dep(upstream), CHAT, BODY)
    assert len(broken.requests) == 1


# --- Redirects ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_never_followed_and_names_its_target(status: int) -> None:
    rec = Recorder(httpx2.Response(status, headers={"location": f"https://evil.test:8443/steal?key={KEY}"}))
    upstream = client(rec)
    with pytest.raises(Redirected) as info:
        await upstream.post(dep(upstream), CHAT, BODY)
    assert len(rec.requests) == 1  # no retry, no second request anywhere
    assert "https://evil.test:8443" in str(info.value)
    assert "base URL is probably wrong" in str(info.value)
    assert KEY not in str(info.value) and "steal" not in str(info.value)


# --- Size caps ------------------------------------------------------------------------------------


async def test_an_answer_over_the_cap_is_refused() -> None:
    rec = Recorder(httpx2.Response(200, content=b"[" + b"0," * (MAX_BODY // 2) + b"0]"))
    upstream = client(rec)
    with pytest.raises(ResponseTooLarge):
        await upstream.post(dep(upstream), CHAT, BODY)


async def test_an_endless_stream_of_small_events_is_cut_at_the_total_cap() -> None:
    """Every event is small (so the per-event cap never trips): only the total cap can stop it."""

    async def endless() -> AsyncIterator[bytes]:
        event = sse(delta("x" * 1000))
        for _ in range(MAX_BODY // len(event) + 100):
            yield event

    rec = Recorder(httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=endless()))
    upstream = client(rec)
    events = 0

    async def read_all() -> None:
        nonlocal events
        async for _ in upstream.stream(dep(upstream), CHAT, BODY):
            events += 1

    with pytest.raises(ResponseTooLarge, match="larger than 32 MiB"):
        await read_all()
    assert events > 1000


async def test_one_event_over_the_cap_is_refused() -> None:
    rec = Recorder(
        httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=b"data: " + b"x" * (MAX_EVENT + 1))
    )
    upstream = client(rec)
    with pytest.raises(ResponseTooLarge, match="one streamed event"):
        async for _ in upstream.stream(dep(upstream), CHAT, BODY):
            pass


async def test_a_stream_without_its_final_event_is_an_error() -> None:
    rec = Recorder(httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=sse(delta("a"))))
    upstream = client(rec)
    with pytest.raises(StreamInterrupted, match="ended before its final event"):
        async for _ in upstream.stream(dep(upstream), CHAT, BODY):
            pass


# --- Redaction ------------------------------------------------------------------------------------

ECHOES = [
    KEY,
    KEY.replace("-", "\\u002d"),  # JSON escapes: the raw bytes never contain the key
    "\\u0073" + KEY[1:],
    base64.b64encode(KEY.encode()).decode(),
    base64.b64encode(KEY.encode()).decode().rstrip("="),
]


@pytest.mark.parametrize("echo", ECHOES, ids=["plain", "escaped-dash", "escaped-s", "base64", "base64-unpadded"])
async def test_an_echoed_key_is_masked_in_a_json_answer_however_it_is_spelled(echo: str) -> None:
    raw = '{"choices":[{"index":0,"message":{"role":"assistant","content":"you sent ' + echo + '"}}]}'
    rec = Recorder(httpx2.Response(200, content=raw.encode()))
    upstream = client(rec)
    answer = await upstream.post(dep(upstream), CHAT, BODY)
    text = json.dumps(answer)
    assert KEY not in text and base64.b64encode(KEY.encode()).decode().rstrip("=") not in text
    assert "[redacted]" in answer["choices"][0]["message"]["content"]


@pytest.mark.parametrize("echo", ECHOES[:3], ids=["plain", "escaped-dash", "escaped-s"])
async def test_an_echoed_key_is_masked_in_each_streamed_event(echo: str) -> None:
    event = b'{"choices":[{"index":0,"delta":{"content":"' + echo.encode() + b'"}}]}'
    rec = Recorder(httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=sse(event, b"[DONE]")))
    upstream = client(rec)
    seen = [e async for e in upstream.stream(dep(upstream), CHAT, BODY)]
    assert KEY not in json.dumps(seen)


async def test_an_error_body_is_redacted_before_it_is_cut() -> None:
    """The key straddles the 300-character cut: cutting first would keep its first half."""
    message = "x" * (300 - len(KEY) // 2) + KEY + " tail"
    rec = Recorder(httpx2.Response(400, json={"error": {"message": message}}))
    upstream = client(rec)
    with pytest.raises(RequestRejected) as info:
        await upstream.post(dep(upstream), CHAT, BODY)
    assert KEY[: len(KEY) // 2] not in str(info.value)


async def test_an_html_error_page_is_summarised_without_markup_or_control_characters() -> None:
    page = (
        b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title><style>body{}</style></head>"
        b"<body><h1>Bad \x1b[31mGateway\x1b[0m</h1>\x00<p>nginx</p></body></html>"
    )
    rec = Recorder(httpx2.Response(502, content=page, headers={"content-type": "text/html"}))
    upstream = client(rec, RetryPolicy(0))
    with pytest.raises(DeploymentUnreachable) as info:
        await upstream.post(dep(upstream), CHAT, BODY)
    text = str(info.value)
    assert "an HTML page titled '502 Bad Gateway'" in text
    assert "<" not in text and "\x1b" not in text and "\x00" not in text and "body{}" not in text


async def test_a_body_that_is_not_json_is_an_invalid_response() -> None:
    rec = Recorder(httpx2.Response(200, content=b"<html>hello</html>", headers={"content-type": "text/html"}))
    upstream = client(rec)
    with pytest.raises(InvalidResponse, match="not JSON"):
        await upstream.get(dep(upstream), MODELS)


# --- Retry-After ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"), [("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("Wed, 21 Oct 2026 07:28:00 GMT", None)]
)
async def test_retry_after_seconds_are_kept_and_dates_ignored(header: str, seconds: float | None) -> None:
    rec = Recorder(httpx2.Response(503, headers={"retry-after": header}))
    upstream = client(rec, RetryPolicy(0))
    with pytest.raises(DeploymentNotReady) as info:
        await upstream.post(dep(upstream), CHAT, BODY)
    assert info.value.retry_after == seconds


# --- The stale resend is not a retry --------------------------------------------------------------


async def test_a_stale_connection_resend_spends_none_of_the_retries() -> None:
    """The resend is the same attempt on a fresh connection: the policy's one retry is still there for the 503."""
    dead = httpx2.RemoteProtocolError("Server disconnected without sending a response.")
    rec = Recorder(dead, httpx2.Response(503), httpx2.Response(200, json=chat_answer("ok")))
    upstream = client(rec, RetryPolicy(max_retries=1, base_delay=0.001, max_delay=0.01))
    answer = await upstream.post(dep(upstream), CHAT, BODY)
    assert answer["choices"][0]["message"]["content"] == "ok"
    assert len(rec.requests) == 3


# --- An answer that is not HTTP ---------------------------------------------------------------------

CAPITAL_KEY = "sk-Canary-Upstream-7F3A9C1E5B"
"""Capitals, so a key the parser or a URL lowercased would show as a second spelling."""
NOT_HTTP = not_http(CAPITAL_KEY)


async def call(upstream: UpstreamClient, deployment: Any, how: str) -> None:
    """One chat request, plain ("post") or streamed ("stream"), read to its end."""
    if how == "post":
        await upstream.post(deployment, CHAT, BODY)
    else:
        async for _ in upstream.stream(deployment, CHAT, BODY):
            pass


@pytest.mark.parametrize("how", ["post", "stream"])
@pytest.mark.parametrize("where", list(NOT_HTTP))
async def test_an_answer_that_is_not_http_is_an_invalid_response_never_resent(where: str, how: str) -> None:
    with raw_http_server(NOT_HTTP[where]) as server:
        settings = load_settings(
            {}, {"GGUF_BASE_URL": server.url, "MODELSLAB_API_KEY": CAPITAL_KEY, "GGUF_MCP_MAX_RETRIES": "3"}
        )
        async with open_upstream(settings) as upstream:
            with pytest.raises(InvalidResponse) as info:
                await call(upstream, settings.deployments["default"], how)
        assert server.requests == 1, "a malformed answer is never retried nor resent as a stale connection"
    text = str(info.value)
    assert f"not valid HTTP (illegal {where})" in text
    assert CAPITAL_KEY.lower() not in text.lower()
    assert "bytearray" not in text and "zz" not in text


def test_only_the_parsers_own_words_are_kept_from_its_complaint() -> None:
    assert _failure(httpx2.RemoteProtocolError(f"illegal header line: bytearray(b'{KEY}')")) == (
        "not http",
        "illegal header line",
    )
    assert _failure(httpx2.RemoteProtocolError(f"Illegal header value b'{KEY}'")) == ("not http", "malformed answer")
    for closed in (
        "Server disconnected without sending a response.",
        "peer closed connection without sending complete message body (incomplete chunked read)",
        "peer unexpectedly closed connection",
    ):
        assert _failure(httpx2.RemoteProtocolError(closed))[0] == "dropped"


# --- Every path returns its connection ---------------------------------------------------------------


class Body(httpx2.AsyncByteStream):
    """A response body that records whether it was closed (what returns a connection to the pool)."""

    def __init__(self, *chunks: bytes, then: Exception | None = None) -> None:
        self.chunks = chunks
        self.then = then
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.then is not None:
            raise self.then

    async def aclose(self) -> None:
        self.closed = True


EVENTS = {"content-type": "text/event-stream"}
BROKEN = httpx2.ReadError("connection reset")
PATHS: dict[str, tuple[str, int, dict[str, str], Body, type[Exception] | None]] = {
    "json answer": ("post", 200, {}, Body(json.dumps(chat_answer("ok")).encode()), None),
    "json not json": ("post", 200, {}, Body(b"<html>"), InvalidResponse),
    "json too large": ("post", 200, {}, Body(*[b"x" * (1024 * 1024)] * 40), ResponseTooLarge),
    "json broken": ("post", 200, {}, Body(b'{"choices"', then=BROKEN), ConnectionFailed),
    "error status": ("post", 400, {}, Body(b'{"error": "no"}'), RequestRejected),
    "error status broken": ("post", 400, {}, Body(b'{"err', then=BROKEN), RequestRejected),
    "error status huge": ("post", 400, {}, Body(*[b"x" * (1024 * 1024)] * 40), RequestRejected),
    "redirect": ("post", 307, {"location": "http://elsewhere.test/"}, Body(b"moved"), Redirected),
    "stream answer": ("stream", 200, EVENTS, Body(sse(delta("a"), b"[DONE]")), None),
    "stream not events": ("stream", 200, {}, Body(b"<html>"), InvalidResponse),
    "event not json": ("stream", 200, EVENTS, Body(sse(delta("a"), b"nope"), sse(delta("b"))), InvalidResponse),
    "event not object": ("stream", 200, EVENTS, Body(sse(delta("a"), [1]), sse(delta("b"))), InvalidResponse),
    "error event": ("stream", 200, EVENTS, Body(sse({"error": {"message": "boom"}}), sse(delta("b"))), UpstreamError),
    "event too large": ("stream", 200, EVENTS, Body(b"data: " + b"x" * (MAX_EVENT + 1), b"\n\n"), ResponseTooLarge),
    "stream too large": ("stream", 200, EVENTS, Body(*[sse(delta("x" * 1000 * 1000))] * 40), ResponseTooLarge),
    "stream broken": ("stream", 200, EVENTS, Body(sse(delta("a")), then=BROKEN), StreamInterrupted),
    "stream unfinished": ("stream", 200, EVENTS, Body(sse(delta("a"))), StreamInterrupted),
}


@pytest.mark.parametrize("path", list(PATHS))
async def test_every_path_closes_its_response(path: str) -> None:
    """Closing the response is what returns its connection to the pool: a path that forgets leaks a slot."""
    how, status, headers, body, raises = PATHS[path]
    upstream = client(lambda _: httpx2.Response(status, headers=headers, stream=body), RetryPolicy(0))
    if raises is None:
        await call(upstream, dep(upstream), how)
    else:
        with pytest.raises(raises):
            await call(upstream, dep(upstream), how)
    assert body.closed


async def test_a_stream_its_reader_leaves_early_closes_its_response() -> None:
    body = Body(sse(delta("a"), delta("b"), b"[DONE]"))
    upstream = client(lambda _: httpx2.Response(200, headers=EVENTS, stream=body))
    async with aclosing(upstream.stream(dep(upstream), CHAT, BODY)) as events:
        async for _ in events:
            break
    assert body.closed
