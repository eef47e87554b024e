"""The GGUF Cloud gateway emulator behaves like the gateway it stands in for.

A scripted upstream (a stand-in llama-server whose stream the test paces) makes relaying,
cancellation and faults observable from both sides of the gateway.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.gateway import (
    ACCOUNT_KEY,
    CANNED_MODEL,
    CANNED_TEXT,
    CANNED_TOKENS,
    Fault,
    Gateway,
    Message,
    Receive,
    Scope,
    Send,
    running_asgi_app,
    running_gateway,
)

UPSTREAM_KEY = "upstream-secret"
DEPLOYMENT = "dep-1"
CANNED = "canned-1"
BEARER = {"authorization": f"Bearer {ACCOUNT_KEY}"}
WAIT_S = 5.0

# --- A scripted upstream -----------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamSaw:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class ScriptedUpstream:
    """A stand-in llama-server: echoes requests, and holds its chat stream after the first event.

    The stream goes on when the test calls `release()`; if its client hangs up while it is held,
    `closed_while_held` is set.
    """

    def __init__(self) -> None:
        self.seen: list[UpstreamSaw] = []
        self.closed_while_held = threading.Event()
        self.finished_stream = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._released: asyncio.Event | None = None

    def release(self) -> None:
        assert self._loop is not None and self._released is not None, "no stream has started"
        self._loop.call_soon_threadsafe(self._released.set)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.seen.append(UpstreamSaw(scope["method"], scope["path"], scope["query_string"].decode(), headers, body))
        if scope["path"] == "/v1/chat/completions" and json.loads(body).get("stream") is True:
            await self._held_stream(receive, send)
        elif scope["path"] == "/v1/busy":
            error = {"error": {"code": 429, "message": "busy", "type": "rate_limit_error"}}
            await _reply(send, 429, json.dumps(error).encode(), [(b"retry-after", b"7")])
        else:
            echo = {"method": scope["method"], "path": scope["path"], "body": body.decode()}
            await _reply(send, 200, json.dumps(echo).encode())

    async def _held_stream(self, receive: Receive, send: Send) -> None:
        self._loop = asyncio.get_running_loop()
        self._released = asyncio.Event()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b'data: {"n":1}\n\n', "more_body": True})
        released = asyncio.ensure_future(self._released.wait())
        gone = asyncio.ensure_future(_wait_for_disconnect(receive))
        await asyncio.wait((released, gone), return_when=asyncio.FIRST_COMPLETED)
        if not released.done():
            self.closed_while_held.set()
            released.cancel()
            return
        gone.cancel()
        for event in (b'data: {"n":2}\n\n', b'data: {"n":3}\n\n', b"data: [DONE]\n\n"):
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.finished_stream.set()


async def _reply(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), *(headers or [])],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


@pytest.fixture
def upstream() -> Iterator[tuple[ScriptedUpstream, str]]:
    app = ScriptedUpstream()
    with running_asgi_app(app) as url:
        yield app, url


@pytest.fixture
def scripted(gateway: Gateway, upstream: tuple[ScriptedUpstream, str]) -> ScriptedUpstream:
    """The scripted upstream, behind the gateway as DEPLOYMENT; the gateway also has CANNED."""
    app, url = upstream
    gateway.add_deployment(DEPLOYMENT, url, UPSTREAM_KEY)
    gateway.add_canned_deployment(CANNED)
    return app


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=WAIT_S, trust_env=False) as c:
        yield c


def sse_events(response: httpx.Response) -> Iterator[bytes]:
    pending = b""
    for chunk in response.iter_raw():
        pending += chunk
        while b"\n\n" in pending:
            event, _, pending = pending.partition(b"\n\n")
            yield event


def chat_stream_request(client: httpx.Client, gateway: Gateway, deployment: str, **extra: Any) -> httpx.Request:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "stream": True, **extra}
    url = gateway.base_url_for(deployment) + "/v1/chat/completions"
    return client.build_request("POST", url, json=body, headers=BEARER)


def gateway_error(error_type: str, message: str) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message}}


# --- Auth and routing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "auth_via"),
    [
        ({"authorization": f"Bearer {ACCOUNT_KEY}"}, "bearer"),
        ({"x-api-key": ACCOUNT_KEY}, "x-api-key"),
        ({"key": ACCOUNT_KEY}, "key"),
    ],
)
def test_account_key_is_accepted_in_each_header_and_replaced_by_the_upstream_key(
    gateway: Gateway, scripted: ScriptedUpstream, client: httpx.Client, headers: dict[str, str], auth_via: str
) -> None:
    response = client.get(gateway.base_url_for(DEPLOYMENT) + "/v1/models", headers=headers)

    assert response.status_code == 200
    [recorded] = gateway.requests
    assert (recorded.deployment_id, recorded.path, recorded.auth_via) == (DEPLOYMENT, "/v1/models", auth_via)
    [saw] = scripted.seen
    assert saw.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "x-api-key" not in saw.headers
    assert "key" not in saw.headers
    assert not any(ACCOUNT_KEY in value for value in saw.headers.values())


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong"}, {"x-api-key": "wrong"}, {"authorization": ACCOUNT_KEY}],
    ids=["none", "wrong-bearer", "wrong-x-api-key", "no-bearer-scheme"],
)
def test_missing_or_wrong_key_is_401_and_reaches_no_deployment(
    gateway: Gateway, scripted: ScriptedUpstream, client: httpx.Client, headers: dict[str, str]
) -> None:
    response = client.get(gateway.base_url_for(DEPLOYMENT) + "/v1/models", headers=headers)

    assert response.status_code == 401
    assert response.json() == gateway_error("authentication_error", "Invalid API key.")
    assert gateway.requests[0].auth_via is None
    assert scripted.seen == []


def test_unknown_deployment_is_404(gateway: Gateway, client: httpx.Client) -> None:
    response = client.get(gateway.base_url_for("nope") + "/v1/models", headers=BEARER)

    assert response.status_code == 404
    assert response.json() == gateway_error("not_found_error", "Deployment not found.")


def test_auth_is_checked_before_the_deployment_exists(gateway: Gateway, client: httpx.Client) -> None:
    response = client.get(gateway.base_url_for("nope") + "/v1/models", headers={"x-api-key": "wrong"})

    assert response.status_code == 401


def test_set_unknown_hides_a_deployment_until_undone(
    gateway: Gateway, scripted: ScriptedUpstream, client: httpx.Client
) -> None:
    url = gateway.base_url_for(DEPLOYMENT) + "/v1/models"
    gateway.set_unknown(DEPLOYMENT)
    hidden = client.get(url, headers=BEARER)
    gateway.set_unknown(DEPLOYMENT, unknown=False)
    shown = client.get(url, headers=BEARER)

    assert (hidden.status_code, shown.status_code) == (404, 200)
    assert len(scripted.seen) == 1


def test_request_outside_the_api_root_is_404_and_recorded(gateway: Gateway, client: httpx.Client) -> None:
    response = client.get(gateway.url + "/v1/models", headers=BEARER)

    assert response.status_code == 404
    [recorded] = gateway.requests
    assert (recorded.deployment_id, recorded.path) == ("", "/v1/models")


def test_request_is_forwarded_with_method_path_query_body_and_content_type(
    gateway: Gateway, scripted: ScriptedUpstream, client: httpx.Client
) -> None:
    body = b'{"prompt": "Once upon"}'
    url = gateway.base_url_for(DEPLOYMENT) + "/v1/completions?a=1&b=two"
    headers = {**BEARER, "content-type": "application/json", "anthropic-version": "2023-06-01"}

    response = client.post(url, content=body, headers=headers)

    assert response.status_code == 200
    [saw] = scripted.seen
    assert (saw.method, saw.path, saw.query, saw.body) == ("POST", "/v1/completions", "a=1&b=two", body)
    assert saw.headers["content-type"] == "application/json"
    assert saw.headers["anthropic-version"] == "2023-06-01"
    [recorded] = gateway.requests
    assert (recorded.query, recorded.body, recorded.json) == ("a=1&b=two", body, {"prompt": "Once upon"})
    assert recorded.headers["anthropic-version"] == "2023-06-01"


def test_upstream_status_retry_after_and_body_are_passed_through(
    gateway: Gateway, scripted: ScriptedUpstream, client: httpx.Client
) -> None:
    response = client.get(gateway.base_url_for(DEPLOYMENT) + "/v1/busy", headers=BEARER)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["message"] == "busy"


def test_unreachable_upstream_is_502(gateway: Gateway, client: httpx.Client) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    gateway.add_deployment(DEPLOYMENT, f"http://127.0.0.1:{closed_port}", UPSTREAM_KEY)

    response = client.get(gateway.base_url_for(DEPLOYMENT) + "/v1/models", headers=BEARER)

    assert response.status_code == 502
    assert response.json() == gateway_error("bad_gateway", "Deployment is restarting.")


def test_requests_for_filters_by_deployment_and_clear_forgets(
    gateway: Gateway, scripted: ScriptedUpstream, client: httpx.Client
) -> None:
    client.get(gateway.base_url_for(DEPLOYMENT) + "/v1/models", headers=BEARER)
    client.get(gateway.base_url_for(CANNED) + "/v1/models", headers=BEARER)

    assert [r.deployment_id for r in gateway.requests_for(CANNED)] == [CANNED]
    gateway.clear()
    assert gateway.requests == []


# --- Error faults ------------------------------------------------------------------------------


def test_fail_next_is_consumed_in_order_then_proxying_resumes(
    gateway: Gateway, scripted: ScriptedUpstream, client: httpx.Client
) -> None:
    gateway.fail_next(DEPLOYMENT, 503)
    gateway.fail_next(DEPLOYMENT, 502, count=2)
    url = gateway.base_url_for(DEPLOYMENT) + "/v1/models"

    responses = [client.get(url, headers=BEARER) for _ in range(4)]

    assert [r.status_code for r in responses] == [503, 502, 502, 200]
    assert responses[0].json() == gateway_error("service_unavailable", "Deployment is not ready.")
    assert responses[1].json() == gateway_error("bad_gateway", "Deployment is restarting.")
    assert gateway.pending_faults(DEPLOYMENT) == 0
    assert len(scripted.seen) == 1


def test_faults_are_per_deployment_and_not_spent_by_rejected_requests(
    gateway: Gateway, scripted: ScriptedUpstream, client: httpx.Client
) -> None:
    gateway.fail_next(DEPLOYMENT, 503)
    client.get(gateway.base_url_for(CANNED) + "/v1/models", headers=BEARER)
    client.get(gateway.base_url_for(DEPLOYMENT) + "/v1/models", headers={"x-api-key": "wrong"})

    assert gateway.pending_faults(DEPLOYMENT) == 1


def test_injected_429_carries_retry_after(gateway: Gateway, scripted: ScriptedUpstream, client: httpx.Client) -> None:
    gateway.fail_next(DEPLOYMENT, 429, retry_after="3")

    response = client.get(gateway.base_url_for(DEPLOYMENT) + "/v1/models", headers=BEARER)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [(502, b"<html><body>502 Bad Gateway</body></html>", "text/html"), (200, b"not json at all", "text/plain")],
)
def test_fail_next_with_a_raw_body_sends_it_verbatim(
    gateway: Gateway, scripted: ScriptedUpstream, client: httpx.Client, status: int, body: bytes, content_type: str
) -> None:
    gateway.fail_next(DEPLOYMENT, status, body=body, content_type=content_type)

    response = client.get(gateway.base_url_for(DEPLOYMENT) + "/v1/models", headers=BEARER)

    assert (response.status_code, response.content) == (status, body)
    assert response.headers["content-type"] == content_type


# --- Streaming and disconnects -----------------------------------------------------------------


def test_sse_is_relayed_event_by_event_while_the_upstream_is_still_generating(
    gateway: Gateway, scripted: ScriptedUpstream, client: httpx.Client
) -> None:
    response = client.send(chat_stream_request(client, gateway, DEPLOYMENT), stream=True)
    events = sse_events(response)

    first = next(events)
    held = not scripted.finished_stream.is_set()
    scripted.release()
    rest = list(events)
    response.close()

    assert first == b'data: {"n":1}'
    assert held
    assert rest == [b'data: {"n":2}', b'data: {"n":3}', b"data: [DONE]"]
    assert response.headers["content-type"] == "text/event-stream"


def test_client_disconnect_closes_the_upstream_request_and_is_recorded(
    gateway: Gateway, scripted: ScriptedUpstream, client: httpx.Client
) -> None:
    response = client.send(chat_stream_request(client, gateway, DEPLOYMENT), stream=True)
    events = sse_events(response)
    next(events)
    hung_up = time.monotonic()
    response.close()

    assert scripted.closed_while_held.wait(WAIT_S)
    [disconnect] = gateway.wait_for_disconnects(1)
    assert (disconnect.deployment_id, disconnect.path) == (DEPLOYMENT, "/v1/chat/completions")
    assert hung_up <= disconnect.at <= time.monotonic()


def test_a_completed_response_is_not_a_disconnect(
    gateway: Gateway, scripted: ScriptedUpstream, client: httpx.Client
) -> None:
    with client.stream("POST", gateway.base_url_for(CANNED) + "/v1/chat/completions", json={"stream": True}) as r:
        r.read()
    for _ in range(3):
        client.get(gateway.base_url_for(DEPLOYMENT) + "/v1/models", headers=BEARER)

    assert gateway.disconnects == []


def test_stopping_the_gateway_with_a_stream_open_is_prompt_and_closes_the_upstream(
    upstream: tuple[ScriptedUpstream, str], client: httpx.Client
) -> None:
    app, url = upstream
    with running_gateway() as gateway:
        gateway.add_deployment(DEPLOYMENT, url, UPSTREAM_KEY)
        response = client.send(chat_stream_request(client, gateway, DEPLOYMENT), stream=True)
        events = sse_events(response)
        next(events)
        stopping = time.monotonic()
    stopped_after = time.monotonic() - stopping

    assert stopped_after < 1.0
    assert app.closed_while_held.wait(WAIT_S)
    with pytest.raises(httpx.RemoteProtocolError):
        list(events)


# --- Timing and stream faults ------------------------------------------------------------------


def test_stall_sends_headers_then_nothing(gateway: Gateway, scripted: ScriptedUpstream) -> None:
    gateway.inject(DEPLOYMENT, Fault.stall(60))
    impatient = httpx.Client(timeout=httpx.Timeout(WAIT_S, read=0.3), trust_env=False)

    with impatient, impatient.stream("GET", gateway.base_url_for(DEPLOYMENT) + "/v1/models", headers=BEARER) as r:
        assert r.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            r.read()

    assert len(scripted.seen) == 1
    assert gateway.wait_for_disconnects(1)[0].path == "/v1/models"


def test_stall_ends_with_the_upstream_body(gateway: Gateway, scripted: ScriptedUpstream, client: httpx.Client) -> None:
    gateway.inject(DEPLOYMENT, Fault.stall(0.2))
    started = time.monotonic()

    response = client.get(gateway.base_url_for(DEPLOYMENT) + "/v1/models", headers=BEARER)

    assert time.monotonic() - started >= 0.2
    assert response.json()["path"] == "/v1/models"


def test_delay_first_byte_holds_even_the_headers(gateway: Gateway, scripted: ScriptedUpstream) -> None:
    gateway.inject(DEPLOYMENT, Fault.delay_first_byte(60))

    with (
        httpx.Client(timeout=httpx.Timeout(WAIT_S, read=0.3), trust_env=False) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        impatient.get(gateway.base_url_for(DEPLOYMENT) + "/v1/models", headers=BEARER)

    assert gateway.wait_for_disconnects(1)[0].deployment_id == DEPLOYMENT
    assert scripted.seen == []


def test_delay_first_byte_then_answers_normally(
    gateway: Gateway, scripted: ScriptedUpstream, client: httpx.Client
) -> None:
    gateway.inject(DEPLOYMENT, Fault.delay_first_byte(0.2))
    started = time.monotonic()

    response = client.get(gateway.base_url_for(DEPLOYMENT) + "/v1/models", headers=BEARER)

    assert time.monotonic() - started >= 0.2
    assert response.status_code == 200


def test_cut_stream_drops_the_connection_after_n_events(gateway: Gateway, client: httpx.Client) -> None:
    gateway.add_canned_deployment(CANNED)
    gateway.inject(CANNED, Fault.cut_stream(after_events=3))
    received: list[bytes] = []

    response = client.send(chat_stream_request(client, gateway, CANNED), stream=True)
    with pytest.raises(httpx.RemoteProtocolError):
        received.extend(sse_events(response))

    assert response.status_code == 200
    assert len(received) == 3
    assert b"data: [DONE]" not in received


def test_cut_stream_closes_the_upstream_request(
    gateway: Gateway, scripted: ScriptedUpstream, client: httpx.Client
) -> None:
    gateway.inject(DEPLOYMENT, Fault.cut_stream(after_events=1))
    received: list[bytes] = []

    response = client.send(chat_stream_request(client, gateway, DEPLOYMENT), stream=True)
    with pytest.raises(httpx.RemoteProtocolError):
        received.extend(sse_events(response))

    assert received == [b'data: {"n":1}']
    assert scripted.closed_while_held.wait(WAIT_S)


# --- Canned deployment: llama-server's shapes without a model ------------------------------------


@pytest.fixture
def canned(gateway: Gateway) -> Iterator[httpx.Client]:
    """A client whose base URL is a canned deployment, with the account key set."""
    gateway.add_canned_deployment(CANNED)
    base_url = gateway.base_url_for(CANNED)
    with httpx.Client(base_url=base_url, headers=BEARER, timeout=WAIT_S, trust_env=False) as c:
        yield c


def test_canned_models_lists_the_one_model_with_meta(canned: httpx.Client) -> None:
    body = canned.get("/v1/models").json()

    assert [m["id"] for m in body["data"]] == [CANNED_MODEL]
    assert body["data"][0]["meta"]["n_ctx"] == 2048
    assert body["object"] == "list"


def test_canned_chat_answers_like_llama_server(canned: httpx.Client) -> None:
    body = canned.post("/v1/chat/completions", json={"messages": [], "max_tokens": 8}).json()

    assert body["object"] == "chat.completion"
    assert body["choices"] == [
        {"finish_reason": "length", "index": 0, "message": {"role": "assistant", "content": CANNED_TEXT}}
    ]
    assert body["usage"]["completion_tokens"] == len(CANNED_TOKENS)
    assert body["id"].startswith("chatcmpl-")


def test_canned_chat_stream_sends_role_tokens_finish_and_done(canned: httpx.Client) -> None:
    with canned.stream("POST", "/v1/chat/completions", json={"messages": [], "stream": True}) as response:
        events = list(sse_events(response))

    assert response.headers["content-type"] == "text/event-stream"
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == CANNED_TEXT
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "usage" not in chunks[-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}


def test_canned_chat_stream_adds_a_usage_chunk_when_asked(canned: httpx.Client) -> None:
    body = {"messages": [], "stream": True, "stream_options": {"include_usage": True}}
    with canned.stream("POST", "/v1/chat/completions", json=body) as response:
        events = list(sse_events(response))

    usage_chunk = json.loads(events[-2].removeprefix(b"data: "))
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == len(CANNED_TOKENS)


def test_canned_completions_stream_ends_with_usage_then_done(canned: httpx.Client) -> None:
    with canned.stream("POST", "/v1/completions", json={"prompt": "Once", "stream": True}) as response:
        events = list(sse_events(response))

    final = json.loads(events[-2].removeprefix(b"data: "))
    assert events[-1] == b"data: [DONE]"
    assert (final["choices"][0]["text"], final["choices"][0]["finish_reason"]) == ("", "length")
    assert "usage" in final
    assert canned.post("/v1/completions", json={"prompt": "Once"}).json()["choices"][0]["text"] == CANNED_TEXT


def test_canned_messages_answers_in_anthropic_shape(canned: httpx.Client) -> None:
    body = canned.post("/v1/messages", json={"max_tokens": 8, "messages": []}).json()

    assert (body["type"], body["role"], body["stop_reason"]) == ("message", "assistant", "max_tokens")
    assert body["content"] == [{"type": "text", "text": CANNED_TEXT}]


def test_canned_messages_stream_sends_anthropic_event_sequence(canned: httpx.Client) -> None:
    with canned.stream("POST", "/v1/messages", json={"max_tokens": 8, "messages": [], "stream": True}) as response:
        events = list(sse_events(response))

    names = [e.split(b"\n")[0].removeprefix(b"event: ").decode() for e in events]
    assert names == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * len(CANNED_TOKENS),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(
        json.loads(e.split(b"\n")[1].removeprefix(b"data: "))["type"] == n for e, n in zip(events, names, strict=True)
    )


def test_canned_embeddings_give_one_unit_vector_per_input(canned: httpx.Client) -> None:
    body = canned.post("/v1/embeddings", json={"model": "m", "input": ["a", "b"]}).json()

    assert body["model"] == "m"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert sum(x * x for x in body["data"][0]["embedding"]) == pytest.approx(1.0)


def test_canned_unknown_route_and_bad_json_fail_like_llama_server(canned: httpx.Client) -> None:
    missing = canned.get("/v1/nope")
    bad_json = canned.post("/v1/chat/completions", content=b"{not json")

    assert (missing.status_code, missing.json()["error"]["type"]) == (404, "not_found_error")
    assert (bad_json.status_code, bad_json.json()["error"]["type"]) == (500, "server_error")
