"""Secret hygiene: the account key (the gateway's canary, ACCOUNT_KEY) never reaches the agent or
the operator, whatever the deployment does, even at debug level and even when the upstream echoes
the key back in an error body, a 200 body or a header.

"Reaches" means: any tool result (text or structured), anything on the server's stderr (every log
record, in both log formats), any configuration error, the server's command line, and the text
and repr of every exception gguf-mcp raises (and of the exceptions chained to it).
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from gguf_mcp.config import load_settings
from gguf_mcp.dialects import CHAT, MESSAGES, MODELS, Endpoint
from gguf_mcp.errors import GGUFMCPError
from tests.support.bridge import ROOT, Bridge, Transport, base_env, free_port
from tests.support.gateway import ACCOUNT_KEY, Exchange, Fault, Gateway
from tests.support.proc import cmdline, gguf_mcp_child
from tests.support.raw_http import not_http, raw_http_server
from tests.support.upstream import open_upstream

USER = [{"role": "user", "content": "Hello there"}]
SSE = "text/event-stream"


def sse(*events: str) -> bytes:
    return "".join(f"data: {e}\n\n" for e in events).encode()


def token_chunk(text: str) -> str:
    return json.dumps({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]})


class EchoKeyInHeader(Fault):
    """A proxy that answers normally but echoes the caller's credentials in a response header,
    under a name no header-based redaction knows."""

    async def answer(self, exchange: Exchange) -> None:
        auth = exchange.request.headers.get("authorization") or exchange.request.headers.get("x-api-key", "")
        async with exchange.open_upstream() as reply:
            await exchange.start(reply.status, [*reply.headers, (b"x-echo-credentials", auth.encode())])
            await exchange.relay_body(reply)


def env_for(gateway: Gateway, **extra: str) -> dict[str, str]:
    return {
        "GGUF_BASE_URL": gateway.base_url_for("dep"),
        "MODELSLAB_API_KEY": ACCOUNT_KEY,
        "GGUF_MCP_LOG_LEVEL": "debug",
        "GGUF_MCP_TIMEOUT": "1",
        "GGUF_MCP_MAX_RETRIES": "1",
        **extra,
    }


@pytest.fixture
def canned(gateway: Gateway) -> Gateway:
    gateway.add_canned_deployment("dep")
    return gateway


# --- Every fault, at debug level, over both transports ------------------------------------------


@pytest.mark.parametrize(("transport", "log_format"), [("stdio", "text"), ("http", "json")])
async def test_no_fault_path_shows_the_key_at_debug_level(
    canned: Gateway, transport: Transport, log_format: str, tmp_path: Path
) -> None:
    config = tmp_path / "two.toml"
    with_down = f'[deployments.main]\nbase_url = "{canned.base_url_for("dep")}"\n'
    config.write_text(with_down + f'[deployments.down]\nbase_url = "http://127.0.0.1:{free_port()}"\n')
    env = env_for(canned, GGUF_MCP_LOG_FORMAT=log_format) | {"GGUF_MCP_CONFIG": str(config)}
    del env["GGUF_BASE_URL"]
    stream: dict[str, Any] = {"progress_callback": _ignore}
    bridge = Bridge(transport, tmp_path)
    async with bridge.connect(env) as client:
        if bridge.transport == "stdio":
            assert not any(ACCOUNT_KEY in part for part in cmdline(gguf_mcp_child()))
        await client.call_tool("list_models", {})
        await client.call_tool("chat", {"messages": USER, "max_tokens": 2})
        await client.call_tool("messages", {"messages": USER, "max_tokens": 2}, **stream)
        await client.call_tool("complete", {"prompt": "x", "max_tokens": 2}, **stream)
        await client.call_tool("embed", {"input": ["a", "b"]})
        for fault in (
            Fault.error(401),
            Fault.error(403),
            Fault.error(503),  # retried once, then fine
            Fault.error(429, retry_after="0"),
            Fault.stall(30),
            Fault.delay_first_byte(30),
            Fault.cut_stream(3),
            Fault.error(200, body=b"<html>proxy</html>", content_type="text/html"),
            EchoKeyInHeader(),
        ):
            canned.inject("dep", fault)
            await client.call_tool("chat", {"messages": USER, "max_tokens": 4}, **stream)
            canned.inject("dep", fault)
            await client.call_tool("messages", {"messages": USER, "max_tokens": 4})
        await client.call_tool("chat", {"messages": USER, "deployment": "down"})
        await client.call_tool("chat", {"messages": USER, "deployment": "nope"})
        await client.call_tool("chat", {"messages": "not a list"})
    seen = bridge.seen_text()
    assert "DEBUG" in seen or '"level": "DEBUG"' in seen, "debug logging produced output to check"
    assert "x-echo-credentials" in seen, "the echoed header was logged (so its redaction was tested)"
    assert ACCOUNT_KEY not in seen


async def _ignore(progress: float, total: float | None, message: str | None) -> None:
    pass


# --- An upstream that echoes the key back ---------------------------------------------------------


JSON = "application/json"


@pytest.mark.parametrize(
    ("tool", "streamed", "status", "body", "content_type"),
    [
        pytest.param(
            "chat", False, 401, json.dumps({"error": {"message": f"Invalid API key {ACCOUNT_KEY}"}}).encode(), JSON,
            id="401-error-body",
        ),
        pytest.param(
            "chat", False, 502, f"<html><pre>Authorization: Bearer {ACCOUNT_KEY}</pre></html>".encode(), "text/html",
            id="502-html-page-retried",
        ),
        pytest.param(
            "chat", True, 200,
            sse(token_chunk("a"), json.dumps({"error": {"code": 500, "message": f"bad key {ACCOUNT_KEY}"}})), SSE,
            id="sse-error-event",
        ),
        pytest.param(
            "chat", False, 200,
            json.dumps({"choices": [{"message": {"role": "assistant", "content": f"key={ACCOUNT_KEY}"}}]}).encode(),
            JSON, id="200-chat-answer",
        ),
        pytest.param(
            "messages", False, 200,
            json.dumps({"type": "message", "content": [{"type": "text", "text": ACCOUNT_KEY}]}).encode(), JSON,
            id="200-messages-answer",
        ),
        pytest.param(
            "list_models", False, 200,
            json.dumps({"data": [{"id": "m", "meta": {"auth": f"Bearer {ACCOUNT_KEY}"}}]}).encode(), JSON,
            id="200-models-meta",
        ),
        pytest.param(
            "chat", True, 200, sse(token_chunk("your key: "), token_chunk(ACCOUNT_KEY), "[DONE]"), SSE,
            id="200-streamed-tokens",
        ),
        pytest.param(
            "chat", False, 200, f"<html>Bearer {ACCOUNT_KEY}</html>".encode(), "text/html",
            id="200-html-page",
        ),
        pytest.param(
            "chat", True, 200, sse(token_chunk("a"), f"not json {ACCOUNT_KEY}"), SSE,
            id="200-sse-event-not-json",
        ),
    ],
)  # fmt: skip
async def test_an_upstream_echoing_the_key_never_shows_it(
    canned: Gateway, tmp_path: Path, tool: str, streamed: bool, status: int, body: bytes, content_type: str
) -> None:
    count = 2 if status == 502 else 1  # 502 is retried (GGUF_MCP_MAX_RETRIES=1): it echoes both times
    canned.inject("dep", Fault.error(status, body=body, content_type=content_type), count)
    args: dict[str, Any] = {
        "list_models": {},
        "chat": {"messages": USER, "max_tokens": 4},
        "messages": {"messages": USER, "max_tokens": 4},
    }[tool]
    bridge = Bridge("stdio", tmp_path)
    async with bridge.connect(env_for(canned)) as client:
        result = await client.call_tool(tool, args, progress_callback=_ignore if streamed else None)
    assert len(canned.requests_for("dep")) == count, "the echo was served"
    assert result.content, "the agent got an answer to check"
    assert ACCOUNT_KEY not in bridge.seen_text()


# --- Configuration errors, which come before any redacting logger ---------------------------------


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"GGUF_BASE_URL": f"http://x:{ACCOUNT_KEY}@127.0.0.1:9"}, id="credentials-in-url"),
        pytest.param({"GGUF_BASE_URL": f"http://127.0.0.1:9/v1?key={ACCOUNT_KEY}"}, id="key-in-query",
                    ),
        pytest.param({"GGUF_BASE_URL": f"127.0.0.1:9/{ACCOUNT_KEY}"}, id="key-in-url-without-scheme",
                    ),
        pytest.param({"GGUF_MCP_TIMEOUT": ACCOUNT_KEY, "GGUF_BASE_URL": "http://127.0.0.1:9"},
                     id="key-pasted-into-another-setting"),
    ],
)  # fmt: skip
def test_configuration_errors_never_echo_the_key(env: dict[str, str]) -> None:
    full = base_env() | {"MODELSLAB_API_KEY": ACCOUNT_KEY} | env
    out = subprocess.run(
        [sys.executable, "-m", "gguf_mcp"], env=full, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2, out.stderr
    assert "configuration error" in out.stderr
    assert ACCOUNT_KEY not in out.stdout + out.stderr


# --- In process: exceptions and log records ------------------------------------------------------


def chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and every exception chained to it, shown or suppressed."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__]


@pytest.mark.parametrize(
    ("route", "fault", "streamed"),
    [
        (CHAT, Fault.error(401, body=json.dumps({"error": {"message": f"bad key {ACCOUNT_KEY}"}}).encode()), False),
        (MESSAGES, Fault.error(403, body=f"forbidden for {ACCOUNT_KEY}".encode(), content_type="text/plain"), False),
        (CHAT, Fault.error(502, body=f"<pre>{ACCOUNT_KEY}</pre>".encode(), content_type="text/html"), False),
        (MODELS, Fault.stall(30), False),
        (CHAT, Fault.cut_stream(2), True),
        (MESSAGES, Fault.error(200, body=sse(json.dumps({"type": "error", "error": {"message": ACCOUNT_KEY}})),
                               content_type=SSE), True),
        (CHAT, None, False),  # deployment down
    ],
    ids=["401-echo", "403-echo", "502-echo", "stall", "cut-stream", "error-event-echo", "refused"],
)  # fmt: skip
async def test_no_exception_text_repr_or_chain_holds_the_key(
    canned: Gateway, route: Endpoint, fault: Fault | None, streamed: bool
) -> None:
    base = canned.base_url_for("dep") if fault is not None else f"http://127.0.0.1:{free_port()}"
    settings = load_settings(
        {},
        {"GGUF_BASE_URL": base, "MODELSLAB_API_KEY": ACCOUNT_KEY, "GGUF_MCP_TIMEOUT": "1", "GGUF_MCP_MAX_RETRIES": "0"},
    )
    assert ACCOUNT_KEY not in repr(settings) + str(settings)
    if fault is not None:
        canned.inject("dep", fault)
    dep = settings.deployments["default"]
    body = {"model": "local", "messages": USER, "max_tokens": 4}
    caught: GGUFMCPError | None = None
    with anyio.fail_after(20):
        async with open_upstream(settings) as upstream:
            try:
                if streamed:
                    async for _ in upstream.stream(dep, route, body):
                        pass
                elif route == MODELS:
                    await upstream.get(dep, route)
                else:
                    await upstream.post(dep, route, body)
            except GGUFMCPError as exc:
                caught = exc
    assert caught is not None, "the fault surfaced as a gguf-mcp error"
    shown = "".join(traceback.format_exception(caught))
    for linked in chain(caught):
        shown += f"\n{linked}\n{linked!r}\n{linked.args!r}"
    assert ACCOUNT_KEY not in shown


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_log_records_are_redacted_by_value_wherever_the_key_hides(
    monkeypatch: pytest.MonkeyPatch, log_format: str
) -> None:
    from gguf_mcp.cli import configure_logging  # type: ignore[attr-defined,unused-ignore]

    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    settings = load_settings(
        {},
        {
            "GGUF_BASE_URL": "http://127.0.0.1:9",
            "MODELSLAB_API_KEY": ACCOUNT_KEY,
            "GGUF_MCP_LOG_LEVEL": "debug",
            "GGUF_MCP_LOG_FORMAT": log_format,
        },
    )
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging(settings)
    try:
        log = logging.getLogger("gguf_mcp.test_secrets")
        log.debug("request headers %s", {"x-custom-auth": ACCOUNT_KEY})  # a header name nobody would list
        log.info("inline " + ACCOUNT_KEY)
        log.info("as bytes %r", ACCOUNT_KEY.encode())
        logging.getLogger("httpcore.http11").debug(
            "receive_response_headers.complete return_value=%r", (b"HTTP/1.1", 200, [(b"x-echo", ACCOUNT_KEY.encode())])
        )
        try:
            raise RuntimeError(f"upstream said {ACCOUNT_KEY}")
        except RuntimeError:
            log.exception("call failed")
        try:
            try:
                raise ValueError(ACCOUNT_KEY)
            except ValueError as inner:
                raise RuntimeError("wrapped") from inner
        except RuntimeError:
            log.warning("chained", exc_info=True)
        for handler in root.handlers:
            handler.flush()
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    written = stderr.getvalue()
    assert "x-custom-auth" in written and "call failed" in written and "chained" in written
    assert ACCOUNT_KEY not in written


# --- A key the model echoes one token at a time ---------------------------------------------------


def split_key_stream(*, pieces: int, done: bool) -> bytes:
    """The key split across `pieces` events between ordinary tokens, as a model emits it."""
    size = -(-len(ACCOUNT_KEY) // pieces)
    parts = [ACCOUNT_KEY[i : i + size] for i in range(0, len(ACCOUNT_KEY), size)]
    events = [token_chunk("Your key is "), *(token_chunk(p) for p in parts), token_chunk(", keep it safe.")]
    return sse(*events, *(["[DONE]"] if done else []))


class Collect:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.messages.append(message or "")


@pytest.mark.parametrize("pieces", [2, 5])
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_key_split_across_streamed_events_is_masked_in_progress_result_and_partial_output(
    canned: Gateway, transport: Transport, pieces: int, tmp_path: Path
) -> None:
    bridge = Bridge(transport, tmp_path)
    async with bridge.connect(env_for(canned, GGUF_MCP_LOG_LEVEL="warning")) as client:
        canned.inject("dep", Fault.error(200, body=split_key_stream(pieces=pieces, done=True), content_type=SSE))
        progress = Collect()
        whole = await client.call_tool("chat", {"messages": USER, "max_tokens": 40}, progress_callback=progress)
        canned.inject("dep", Fault.error(200, body=split_key_stream(pieces=pieces, done=False), content_type=SSE))
        cut = await client.call_tool("chat", {"messages": USER, "max_tokens": 40}, progress_callback=Collect())
    text = whole.content[0].text  # type: ignore[union-attr]
    assert not whole.is_error and text.startswith("Your key is [redacted], keep it safe."), text
    assert (whole.structured_content or {})["text"] == "Your key is [redacted], keep it safe."
    joined = "".join(progress.messages)
    assert joined == "Your key is [redacted], keep it safe.", progress.messages  # as a client joins them
    assert cut.is_error and "Partial output" in cut.content[0].text  # type: ignore[union-attr]
    assert ACCOUNT_KEY not in bridge.seen_text()
    for piece in (ACCOUNT_KEY[: len(ACCOUNT_KEY) // 2], ACCOUNT_KEY[len(ACCOUNT_KEY) // 2 :]):
        assert piece not in joined and piece not in bridge.seen_text()


# --- An answer that is not HTTP, quoting the key ---------------------------------------------------

CAPITAL_KEY = "sk-Canary-NotHTTP-7F3A9C1E5B"
"""Capitals, so a key shown case-folded is a second spelling to look for."""


@pytest.mark.parametrize("transport", ["stdio", "http"])
@pytest.mark.parametrize("where", list(not_http(CAPITAL_KEY)))
async def test_an_answer_that_is_not_http_shows_no_key_and_is_sent_once(
    tmp_path: Path, transport: Transport, where: str
) -> None:
    """A malformed status line, header line or chunk header quoting the key: plain and streamed chat,
    list_models and the resource each get an invalid response without the key, and send nothing twice."""
    with raw_http_server(not_http(CAPITAL_KEY)[where]) as server:
        env = {"GGUF_BASE_URL": server.url, "MODELSLAB_API_KEY": CAPITAL_KEY, "GGUF_MCP_MAX_RETRIES": "2"}
        bridge = Bridge(transport, tmp_path)
        async with bridge.connect(env) as client:
            results = [
                await client.call_tool("chat", {"messages": USER, "max_tokens": 2}),
                await client.call_tool("chat", {"messages": USER, "max_tokens": 2}, progress_callback=_ignore),
                await client.call_tool("list_models", {}),
            ]
            resource = await client.read_resource("gguf://deployments")
        assert server.requests == 4, "each call sent once: a malformed answer is neither retried nor resent"
    for result in results:
        text = result.content[0].text  # type: ignore[union-attr]
        assert result.is_error and "not valid HTTP" in text, text
    shown = json.dumps(resource.model_dump(mode="json")) + bridge.seen_text()
    assert "not valid HTTP" in shown
    assert CAPITAL_KEY.lower() not in shown.lower()
