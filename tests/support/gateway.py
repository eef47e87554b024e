"""GGUF Cloud gateway emulator: what the bridge talks to in tests.

GGUF Cloud is llama.cpp's ``llama-server`` behind a gateway at
``https://modelslab.com/api/gguf/{deployment_id}/...``. The gateway checks the account key (in
``Authorization: Bearer``, ``x-api-key`` or ``key``), answers 404 for unknown deployments and
502/503 while a pod is not ready, and otherwise proxies to the deployment's ``llama-server``.

`Gateway` reproduces that on a real loopback socket, so the bridge runs its real HTTP stack:
- each deployment is either *proxied* to a real llama-server (`Gateway.add_deployment`) or
  *canned* (`Gateway.add_canned_deployment`: llama-server's exact shapes, no model, for
  benchmarks and fault tests);
- every request is recorded (`Gateway.requests`), and every client that hangs up before its
  response is complete is recorded with a timestamp (`Gateway.disconnects`) after the upstream
  request has been closed, so tests can measure cancellation;
- `Fault`s queued per deployment replace the normal answer of the next requests: gateway errors,
  raw bodies, stalls, a delayed first byte, streams cut mid-way.

Use the `gateway` fixture, or `running_gateway(key)` for a gateway of your own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, NoReturn, Protocol, TypeVar

import httpx
import pytest
import uvicorn

ACCOUNT_KEY = "sk-canary-7f3a9c1e5b2d4a60"
"""The account key the `gateway` fixture accepts. A canary: grep for it to find a leak."""

AuthVia = Literal["bearer", "x-api-key", "key"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_T = TypeVar("_T")

_ROOT = "/api/gguf/"
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
# Handlers normally end within milliseconds of their connection being aborted; this only bounds a bug.
_SHUTDOWN_GRACE_S = 2.0
_UPSTREAM_TIMEOUT = httpx.Timeout(connect=5.0, read=120.0, write=30.0, pool=30.0)
# What llama-server needs; the client's own auth headers are never forwarded.
_FORWARDED_REQUEST_HEADERS = ("content-type", "accept", "anthropic-version", "anthropic-beta")
_RELAYED_RESPONSE_HEADERS = frozenset(
    {b"content-type", b"content-length", b"content-encoding", b"retry-after", b"cache-control", b"x-accel-buffering"}
)
_JSON = "application/json"

# The gateway's own errors, {"error": {"type": ..., "message": ...}}, by status.
_GATEWAY_ERRORS: dict[int, tuple[str, str]] = {
    401: ("authentication_error", "Invalid API key."),
    404: ("not_found_error", "Deployment not found."),
    429: ("rate_limit_error", "Rate limit exceeded."),
    500: ("internal_error", "Internal server error."),
    502: ("bad_gateway", "Deployment is restarting."),
    503: ("service_unavailable", "Deployment is not ready."),
    504: ("gateway_timeout", "Deployment did not answer in time."),
}


# --- What the gateway records ------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the gateway received it, before auth, faults or proxying.

    `path` is relative to the deployment root ("/v1/chat/completions"); for a request outside
    /api/gguf/{id}/ `deployment_id` is "" and `path` is the full path. `auth_via` names the header
    that carried the right account key (None: no right key, answered 401). `at` is
    time.monotonic() on arrival, for measuring retry back-off.
    """

    deployment_id: str
    method: str
    path: str
    headers: dict[str, str]
    auth_via: AuthVia | None
    body: bytes
    json: Any | None
    query: str = ""
    at: float = 0.0


@dataclass(frozen=True)
class Disconnect:
    """A client that hung up before its response was complete.

    `at` is time.monotonic() when the gateway noticed; by then the upstream request is closed.
    Stopping the gateway while responses are open records them too.
    """

    deployment_id: str
    path: str
    at: float


# --- Faults: how one request is answered instead of the normal relay ---------------------------


class Fault(ABC):
    """A misbehaviour for one request; queue it with `Gateway.inject`.

    A new kind is a subclass whose `answer` builds the reply from `Exchange` steps; callers keep
    using `Gateway.inject`.
    """

    @abstractmethod
    async def answer(self, exchange: Exchange) -> None:
        """Answer the request (or break the connection) in this fault's way."""

    @staticmethod
    def error(
        status: int, *, retry_after: str | None = None, body: bytes | None = None, content_type: str = _JSON
    ) -> Fault:
        """The gateway's own error for `status` (or `body` verbatim); the deployment is not contacted."""
        return ErrorReply(status, retry_after=retry_after, body=body, content_type=content_type)

    @staticmethod
    def redirect(status: int, location: str) -> Fault:
        """Answer `status` with a `Location` header, as a moved or misconfigured deployment would."""
        return ErrorReply(status, body=b"", content_type="text/plain", headers=(("location", location),))

    @staticmethod
    def stall(seconds: float) -> Fault:
        """Send the deployment's status and headers, then nothing for `seconds`, then the body."""
        return Stall(seconds)

    @staticmethod
    def delay_first_byte(seconds: float) -> Fault:
        """Hold the request `seconds` before proxying it; nothing is sent meanwhile."""
        return DelayFirstByte(seconds)

    @staticmethod
    def cut_stream(after_events: int) -> Fault:
        """Relay `after_events` SSE events, then drop the connection without ending the response."""
        return CutStream(after_events)


@dataclass(frozen=True)
class ErrorReply(Fault):
    """A gateway error (or any raw body, e.g. a proxy's HTML page) instead of the deployment's answer."""

    status: int
    retry_after: str | None = None
    body: bytes | None = None
    content_type: str = _JSON
    headers: tuple[tuple[str, str], ...] = ()

    async def answer(self, exchange: Exchange) -> None:
        body = _gateway_error_body(self.status) if self.body is None else self.body
        headers = dict(self.headers) | ({} if self.retry_after is None else {"retry-after": self.retry_after})
        await exchange.reply(self.status, body, self.content_type, headers)


@dataclass(frozen=True)
class Stall(Fault):
    """Headers on time, then silence: a read time-out in the middle of a response."""

    seconds: float

    async def answer(self, exchange: Exchange) -> None:
        async with exchange.open_upstream() as reply:
            await exchange.start(reply.status, reply.headers)
            await asyncio.sleep(self.seconds)
            await exchange.relay_body(reply)


@dataclass(frozen=True)
class DelayFirstByte(Fault):
    """A deployment slow to answer at all: a read time-out before the headers."""

    seconds: float

    async def answer(self, exchange: Exchange) -> None:
        await asyncio.sleep(self.seconds)
        await exchange.pass_through()


@dataclass(frozen=True)
class CutStream(Fault):
    """A stream that ends without its final event: the connection drops after `after_events` events.

    Events are SSE events (ended by a blank line); a body that is not SSE counts as one event. If
    the deployment ends first, the connection still drops instead of ending cleanly.
    """

    after_events: int

    async def answer(self, exchange: Exchange) -> None:
        async with exchange.open_upstream() as reply:
            await exchange.start(reply.status, reply.headers)
            if self.after_events > 0:
                sent = 0
                async with contextlib.aclosing(exchange.sse_events(reply)) as events:
                    async for event in events:
                        await exchange.write(event)
                        sent += 1
                        if sent == self.after_events:
                            break
            exchange.cut()


class ConnectionCut(Exception):
    """Raised by a fault to drop the client connection mid-response, as a dying proxy would."""


class _HideDeliberateCuts(logging.Filter):
    """uvicorn logs an ASGI error with a traceback for every cut; for `ConnectionCut` it is intended."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionCut))


_HIDE_DELIBERATE_CUTS = _HideDeliberateCuts()


# --- One request being answered ----------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamReply:
    """The deployment's answer as it arrives: status, the headers worth relaying, body chunks."""

    status: int
    headers: list[tuple[bytes, bytes]]
    chunks: AsyncIterator[bytes]


class _Deployment(Protocol):
    def open(self, request: RecordedRequest, client: httpx.AsyncClient) -> AbstractAsyncContextManager[UpstreamReply]:
        """Send `request` to the deployment; the reply's body is read inside the context."""


class Exchange:
    """One request being answered. Faults compose their reply from these steps."""

    def __init__(
        self, request: RecordedRequest, send: Send, deployment: _Deployment, client: httpx.AsyncClient
    ) -> None:
        self.request = request
        self.completed = False
        self._send = send
        self._deployment = deployment
        self._client = client

    def open_upstream(self) -> AbstractAsyncContextManager[UpstreamReply]:
        """Send the request to the deployment; leaving the context closes the upstream request."""
        return self._deployment.open(self.request, self._client)

    async def start(self, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        await self._send({"type": "http.response.start", "status": status, "headers": list(headers)})

    async def write(self, chunk: bytes) -> None:
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def finish(self) -> None:
        # Set first: once the last byte is out, the disconnect watcher wakes up and must not count it.
        self.completed = True
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def reply(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """A whole response at once."""
        await self.start(status, _header_list(body, content_type, headers))
        self.completed = True
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def body_chunks(self, reply: UpstreamReply) -> AsyncIterator[bytes]:
        """The reply's body; a deployment that dies mid-body drops the client connection too."""
        try:
            async for chunk in reply.chunks:
                yield chunk
        except httpx.TransportError as exc:
            raise ConnectionCut from exc

    def sse_events(self, reply: UpstreamReply) -> AsyncGenerator[bytes, None]:
        """The reply's body re-chunked into whole SSE events, for faults that act per event."""
        return _sse_events(self.body_chunks(reply))

    async def relay_body(self, reply: UpstreamReply) -> None:
        """Forward the body chunk by chunk as it arrives (no buffering), then end the response."""
        async for chunk in self.body_chunks(reply):
            await self.write(chunk)
        await self.finish()

    async def pass_through(self) -> None:
        """The normal answer: the deployment's status, headers and body."""
        async with self.open_upstream() as reply:
            await self.start(reply.status, reply.headers)
            await self.relay_body(reply)

    def cut(self) -> NoReturn:
        """Drop the connection now; what was sent stays sent, the response never ends."""
        raise ConnectionCut


# --- Deployments: proxied to a real llama-server, or canned ------------------------------------


@dataclass(frozen=True)
class _ProxiedDeployment:
    """A deployment whose llama-server listens at `upstream_url`, guarded by `upstream_key`."""

    upstream_url: str
    upstream_key: str | None

    @asynccontextmanager
    async def open(self, request: RecordedRequest, client: httpx.AsyncClient) -> AsyncIterator[UpstreamReply]:
        headers = {name: request.headers[name] for name in _FORWARDED_REQUEST_HEADERS if name in request.headers}
        headers["accept-encoding"] = "identity"  # so raw chunks can be relayed with their content-length
        if self.upstream_key is not None:
            headers["authorization"] = f"Bearer {self.upstream_key}"
        url = httpx.URL(self.upstream_url.rstrip("/") + request.path).copy_with(query=request.query.encode())
        upstream_request = client.build_request(request.method, url, content=request.body, headers=headers)
        failed: int | None = None
        try:
            response = await client.send(upstream_request, stream=True)
        except httpx.TransportError as exc:  # pod unreachable: the real gateway reports it as restarting
            failed = 504 if isinstance(exc, httpx.TimeoutException) else 502
        if failed is not None:
            yield _gateway_error_reply(failed)
            return
        try:
            relayed = [(k, v) for k, v in response.headers.raw if k.lower() in _RELAYED_RESPONSE_HEADERS]
            yield UpstreamReply(response.status_code, relayed, response.aiter_raw())
        finally:
            await response.aclose()


class _CannedDeployment:
    """Answers at once in llama-server's exact shapes, from fixed data (see `_canned_reply`)."""

    @asynccontextmanager
    async def open(self, request: RecordedRequest, client: httpx.AsyncClient) -> AsyncIterator[UpstreamReply]:
        yield _canned_reply(request)


# --- The gateway -------------------------------------------------------------------------------


class Gateway:
    """The GGUF Cloud gateway on 127.0.0.1: auth, deployment routing, faults, recording.

    All methods are thread-safe; the server runs in its own thread. Use as a context manager
    (or via `running_gateway`) to start and stop it.
    """

    def __init__(self, account_key: str) -> None:
        self.account_key = account_key
        self._changed = threading.Condition()
        self._deployments: dict[str, _Deployment] = {}
        self._unknown: set[str] = set()
        self._faults: dict[str, deque[Fault]] = {}
        self._requests: list[RecordedRequest] = []
        self._disconnects: list[Disconnect] = []
        self._client: httpx.AsyncClient | None = None
        self._server = _UvicornThread(self._asgi, lifespan="on")
        self.url = self._server.url
        """The root, http://127.0.0.1:PORT."""

    def __enter__(self) -> Gateway:
        self._server.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.stop()

    def base_url_for(self, deployment_id: str) -> str:
        """The deployment's private base URL, as GGUF Cloud shows it to users."""
        return f"{self.url}{_ROOT}{deployment_id}"

    def add_deployment(self, deployment_id: str, upstream_url: str, upstream_key: str | None) -> None:
        """Proxy /api/gguf/{deployment_id}/{path} to {upstream_url}/{path} with the upstream's own key."""
        self._add(deployment_id, _ProxiedDeployment(upstream_url, upstream_key))

    def add_canned_deployment(self, deployment_id: str) -> None:
        """A deployment that answers at once with fixed llama-server replies (no model needed)."""
        self._add(deployment_id, _CannedDeployment())

    def set_unknown(self, deployment_id: str, unknown: bool = True) -> None:
        """Make a deployment answer 404 as if it did not exist (or undo that)."""
        with self._changed:
            if unknown:
                self._unknown.add(deployment_id)
            else:
                self._unknown.discard(deployment_id)

    def inject(self, deployment_id: str, fault: Fault, count: int = 1) -> None:
        """Answer the next `count` authenticated requests to a known deployment with `fault`.

        Faults queue per deployment and are consumed in order; then proxying resumes.
        """
        with self._changed:
            self._faults.setdefault(deployment_id, deque()).extend([fault] * count)

    def fail_next(
        self,
        deployment_id: str,
        status: int,
        count: int = 1,
        *,
        retry_after: str | None = None,
        body: bytes | None = None,
        content_type: str = _JSON,
    ) -> None:
        """Answer the next `count` requests with the gateway's error for `status` (or `body` verbatim).

        401, 404, 429, 500, 502 (restarting), 503 (not ready) and 504 get GGUF Cloud's error shape.
        """
        self.inject(
            deployment_id, Fault.error(status, retry_after=retry_after, body=body, content_type=content_type), count
        )

    def pending_faults(self, deployment_id: str) -> int:
        with self._changed:
            return len(self._faults.get(deployment_id, ()))

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._changed:
            return list(self._requests)

    def requests_for(self, deployment_id: str) -> list[RecordedRequest]:
        with self._changed:
            return [r for r in self._requests if r.deployment_id == deployment_id]

    @property
    def disconnects(self) -> list[Disconnect]:
        with self._changed:
            return list(self._disconnects)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until `count` requests have arrived; returns the first `count`."""
        return self._wait_for(self._requests, count, timeout, "requests")

    def wait_for_disconnects(self, count: int = 1, timeout: float = 5.0) -> list[Disconnect]:
        """Block until `count` client disconnects are recorded; returns the first `count`."""
        return self._wait_for(self._disconnects, count, timeout, "disconnects")

    def clear(self) -> None:
        """Forget recorded requests and disconnects."""
        with self._changed:
            self._requests.clear()
            self._disconnects.clear()

    def reset(self) -> None:
        """Back to a fresh gateway: no deployments, faults, unknown ids or records."""
        with self._changed:
            self._deployments.clear()
            self._unknown.clear()
            self._faults.clear()
            self._requests.clear()
            self._disconnects.clear()

    def _add(self, deployment_id: str, deployment: _Deployment) -> None:
        with self._changed:
            self._deployments[deployment_id] = deployment

    def _wait_for(self, records: list[_T], count: int, timeout: float, what: str) -> list[_T]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(records) >= count, timeout):
                raise TimeoutError(f"{len(records)} of {count} {what} after {timeout} s")
            return records[:count]

    def _record(self, records: list[_T], record: _T) -> None:
        with self._changed:
            records.append(record)
            self._changed.notify_all()

    def _route(self, deployment_id: str) -> tuple[_Deployment | None, Fault | None]:
        with self._changed:
            deployment = None if deployment_id in self._unknown else self._deployments.get(deployment_id)
            faults = self._faults.get(deployment_id)
            fault = faults.popleft() if deployment is not None and faults else None
            return deployment, fault

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._handle(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Owns the upstream client, which must live and die in the server's event loop."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # No keep-alive: llama-server may close an idle connection just as it is reused,
                # which would surface as a spurious 502 here.
                limits = httpx.Limits(max_keepalive_connections=0)
                # verify=False: upstreams are plain HTTP on loopback, and loading the CA bundle
                # would cost ~40 ms of every gateway start.
                self._client = httpx.AsyncClient(
                    timeout=_UPSTREAM_TIMEOUT,
                    limits=limits,
                    trust_env=False,
                    verify=False,  # noqa: S501
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = time.monotonic()
        body = await _read_body(receive)
        if body is None:
            return  # the client left before sending its whole body
        deployment_id, path = _split_path(scope["path"])
        headers = _header_dict(scope["headers"])
        request = RecordedRequest(
            deployment_id=deployment_id,
            method=scope["method"],
            path=path,
            headers=headers,
            auth_via=_auth_via(headers, self.account_key),
            body=body,
            json=_parse_json(body),
            query=scope["query_string"].decode("latin-1"),
            at=arrived,
        )
        self._record(self._requests, request)
        if not deployment_id:
            await _send_json(send, 404, _error_json("not_found_error", "Not found."))
        elif request.auth_via is None:
            await _send_json(send, 401, _gateway_error_body(401))
        else:
            deployment, fault = self._route(deployment_id)
            if deployment is None:
                await _send_json(send, 404, _gateway_error_body(404))
            else:
                assert self._client is not None, "the lifespan creates the client before requests"
                exchange = Exchange(request, send, deployment, self._client)
                answer = exchange.pass_through() if fault is None else fault.answer(exchange)
                await self._answer_until_disconnect(answer, exchange, receive)

    async def _answer_until_disconnect(self, answer: Awaitable[None], exchange: Exchange, receive: Receive) -> None:
        """Run `answer`; if the client hangs up first, close the upstream request at once and record it.

        Needed because uvicorn's send() to a gone client is silently dropped: an idle or stalled
        stream would otherwise keep llama-server generating until it finishes on its own.
        """
        answering = asyncio.ensure_future(answer)
        watching = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait((answering, watching), return_when=asyncio.FIRST_COMPLETED)
            if answering.done() or exchange.completed:
                await answering  # its outcome (including a deliberate cut) is the request's outcome
                return
            noticed = time.monotonic()
            answering.cancel()
            await asyncio.wait((answering,))
            if not answering.cancelled():
                answering.exception()  # the client is gone: nobody is left to report a late failure to
            request = exchange.request
            self._record(self._disconnects, Disconnect(request.deployment_id, request.path, noticed))
        finally:
            answering.cancel()
            watching.cancel()


@contextlib.contextmanager
def running_gateway(account_key: str = ACCOUNT_KEY) -> Iterator[Gateway]:
    """A started gateway accepting `account_key`; stopped (streams and all) on exit."""
    with Gateway(account_key) as gateway:
        yield gateway


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    """A fresh, running gateway that accepts `ACCOUNT_KEY` and knows no deployments yet."""
    with running_gateway(ACCOUNT_KEY) as gw:
        yield gw


@contextlib.contextmanager
def running_asgi_app(app: AsgiApp) -> Iterator[str]:
    """Serve any ASGI app on 127.0.0.1 (e.g. a scripted upstream); yields its root URL."""
    server = _UvicornThread(app, lifespan="off")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


# --- Serving: uvicorn in a thread, started and stopped in milliseconds --------------------------


class _PromptServer(uvicorn.Server):
    """uvicorn.Server that exits on an event and shuts down without lingering.

    Stock uvicorn polls for exit every 100 ms, sleeps 100 ms when shutting down and waits for open
    streams to end; a server per test, stopped with streams open, cannot afford either.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit: asyncio.Event | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._exit = asyncio.Event()
        await super().startup(sockets=sockets)
        self.ready.set()

    async def main_loop(self) -> None:
        assert self._exit is not None
        await self._exit.wait()

    def request_exit(self) -> None:
        """Callable from any thread."""
        if self._loop is not None and self._exit is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                self._loop.call_soon_threadsafe(self._exit.set)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        # Aborting every connection wakes each handler's disconnect watcher, which closes its upstream.
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        tasks = set(self.server_state.tasks)
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=_SHUTDOWN_GRACE_S)
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.wait(stuck)
        await self.lifespan.shutdown()
        for server in self.servers:
            await server.wait_closed()


class _UvicornThread:
    """uvicorn serving one ASGI app on 127.0.0.1 from a daemon thread with its own event loop.

    The socket is bound here, so the URL is known before the server starts.
    """

    def __init__(self, app: AsgiApp, *, lifespan: Literal["on", "off"]) -> None:
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the
        # listening socket's proto says TCP; with proto 0, Nagle adds ~40 ms to every response.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(
            app,
            lifespan=lifespan,
            http="h11",  # the one implementation always installed; its disconnect handling is relied on
            ws="none",
            interface="asgi3",
            log_config=None,  # never reconfigure the test process's logging
            access_log=False,
            proxy_headers=False,
            server_header=False,
            date_header=False,
        )
        self._server = _PromptServer(config)
        self._thread = threading.Thread(target=self._run, name=f"uvicorn {self.url}", daemon=True)
        self._failure: BaseException | None = None

    def start(self) -> None:
        logging.getLogger("uvicorn.error").addFilter(_HIDE_DELIBERATE_CUTS)
        self._thread.start()
        if not self._server.ready.wait(_START_TIMEOUT_S) or not self._server.started:
            self.stop()
            raise RuntimeError(f"uvicorn did not start on {self.url}") from self._failure

    def stop(self) -> None:
        self._server.request_exit()
        if self._thread.is_alive():
            self._thread.join(_STOP_TIMEOUT_S)
            if self._thread.is_alive():
                raise RuntimeError(f"uvicorn on {self.url} did not stop within {_STOP_TIMEOUT_S} s")
        self._socket.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._socket]))
        except BaseException as exc:  # uvicorn reports start-up failures as SystemExit
            self._failure = exc
        finally:
            self._server.ready.set()  # never leave start() waiting for a server that is gone


# --- HTTP helpers ------------------------------------------------------------------------------


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _split_path(path: str) -> tuple[str, str]:
    """(deployment_id, path under the deployment root); ("", path) outside /api/gguf/{id}."""
    if not path.startswith(_ROOT):
        return "", path
    deployment_id, _, rest = path[len(_ROOT) :].partition("/")
    return (deployment_id, "/" + rest) if deployment_id else ("", path)


def _header_dict(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def _auth_via(headers: Mapping[str, str], account_key: str) -> AuthVia | None:
    """Which header carries the account key. The scheme is case-insensitive (RFC 9110)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip() == account_key:
        return "bearer"
    if headers.get("x-api-key") == account_key:
        return "x-api-key"
    if headers.get("key") == account_key:
        return "key"
    return None


def _parse_json(body: bytes) -> Any | None:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _dumps(value: Any) -> bytes:
    """JSON as llama-server writes it: compact, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _error_json(error_type: str, message: str) -> bytes:
    return _dumps({"error": {"type": error_type, "message": message}})


def _gateway_error_body(status: int) -> bytes:
    if status in _GATEWAY_ERRORS:
        return _error_json(*_GATEWAY_ERRORS[status])
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return _error_json("error", f"{phrase}.")


def _header_list(body: bytes, content_type: str, extra: Mapping[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(name.encode(), value.encode()) for name, value in (extra or {}).items()]
    return headers


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _header_list(body, _JSON)})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _iterate(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _bytes_reply(status: int, body: bytes, content_type: str) -> UpstreamReply:
    return UpstreamReply(status, _header_list(body, content_type), _iterate([body]))


def _gateway_error_reply(status: int) -> UpstreamReply:
    return _bytes_reply(status, _gateway_error_body(status), _JSON)


def _event_end(data: bytes) -> int | None:
    """Where the first complete SSE event in `data` ends (after its blank line), if any."""
    ends = [found + len(sep) for sep in (b"\n\n", b"\r\n\r\n") if (found := data.find(sep)) >= 0]
    return min(ends, default=None)


async def _sse_events(chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    """Re-chunk a body into whole SSE events; a trailing partial event comes last."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        while (end := _event_end(pending)) is not None:
            event, pending = pending[:end], pending[end:]
            yield event
    if pending:
        yield pending


# --- Canned deployment: llama-server's answers without a model -----------------------------------
# Shapes copied from a real llama-server (llama.cpp@0c1e570, the tiny test model); values are fixed.
# Requests are not validated beyond "is the body JSON": this serves benchmarks and fault tests.

CANNED_MODEL = "tiny-llama-v2.gguf"
CANNED_TOKENS = ("2", "y", "G", "X", "~", "+", "'", "Y")
CANNED_TEXT = "".join(CANNED_TOKENS)
_CANNED_ID = "chatcmpl-Kvds4lTwV7c7qGO7qtQjdxVSBeG09q1I"
_CANNED_CREATED = 1795645412
_CANNED_FINGERPRINT = "b1-0c1e570"
_CANNED_TIMINGS = {
    "cache_n": 0,
    "prompt_n": 32,
    "prompt_ms": 2.411,
    "prompt_per_token_ms": 0.075,
    "prompt_per_second": 13272.5,
    "predicted_n": len(CANNED_TOKENS),
    "predicted_ms": 1.123,
    "predicted_per_token_ms": 0.14,
    "predicted_per_second": 7123.8,
}
_CANNED_EMBEDDING = [0.125] * 64  # unit length, like llama-server's normalised mean pooling
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"x-accel-buffering", b"no")]
_LLAMA_JSON = "application/json; charset=utf-8"


def _openai_usage(prompt_tokens: int) -> dict[str, Any]:
    completion_tokens = len(CANNED_TOKENS)
    return {
        "completion_tokens": completion_tokens,
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def _llama_json(value: Any, status: int = 200) -> UpstreamReply:
    return _bytes_reply(status, _dumps(value), _LLAMA_JSON)


def _llama_error(status: int, error_type: str, message: str) -> UpstreamReply:
    return _llama_json({"error": {"code": status, "message": message, "type": error_type}}, status)


def _sse(events: Iterable[bytes]) -> UpstreamReply:
    return UpstreamReply(200, list(_SSE_HEADERS), _iterate(events))


def _data_event(value: Any) -> bytes:
    return b"data: " + _dumps(value) + b"\n\n"


def _typed_event(value: dict[str, Any]) -> bytes:
    return f"event: {value['type']}\n".encode() + _data_event(value)


def _canned_models() -> UpstreamReply:
    return _llama_json(
        {
            "models": [
                {
                    "name": CANNED_MODEL,
                    "model": CANNED_MODEL,
                    "modified_at": "",
                    "size": "",
                    "digest": "",
                    "type": "model",
                    "description": "",
                    "tags": [""],
                    "capabilities": ["completion"],
                    "parameters": "",
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": "",
                        "families": [""],
                        "parameter_size": "",
                        "quantization_level": "",
                    },
                }
            ],
            "object": "list",
            "data": [
                {
                    "id": CANNED_MODEL,
                    "aliases": [CANNED_MODEL],
                    "tags": [],
                    "object": "model",
                    "created": _CANNED_CREATED,
                    "owned_by": "llamacpp",
                    "meta": {
                        "vocab_type": 1,
                        "n_vocab": 261,
                        "n_ctx": 2048,
                        "n_ctx_train": 2048,
                        "n_embd": 64,
                        "n_params": 115648,
                        "size": 462592,
                        "ftype": "all F32",
                    },
                }
            ],
        }
    )


def _canned_chat(body: dict[str, Any]) -> UpstreamReply:
    usage = _openai_usage(prompt_tokens=32)
    if body.get("stream") is not True:
        return _llama_json(
            {
                "choices": [
                    {"finish_reason": "length", "index": 0, "message": {"role": "assistant", "content": CANNED_TEXT}}
                ],
                "created": _CANNED_CREATED,
                "model": CANNED_MODEL,
                "system_fingerprint": _CANNED_FINGERPRINT,
                "object": "chat.completion",
                "usage": usage,
                "id": _CANNED_ID,
                "timings": _CANNED_TIMINGS,
            }
        )

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return _data_event(
            {
                "choices": choices,
                "created": _CANNED_CREATED,
                "id": _CANNED_ID,
                "model": CANNED_MODEL,
                "system_fingerprint": _CANNED_FINGERPRINT,
                "object": "chat.completion.chunk",
                **extra,
            }
        )

    def delta(value: dict[str, Any], finish_reason: str | None = None) -> list[dict[str, Any]]:
        return [{"finish_reason": finish_reason, "index": 0, "delta": value}]

    events = [chunk(delta({"role": "assistant", "content": None}))]
    events += [chunk(delta({"content": token})) for token in CANNED_TOKENS]
    stream_options = body.get("stream_options")
    if isinstance(stream_options, dict) and stream_options.get("include_usage") is True:
        # The timings move from the finish chunk to the extra usage chunk.
        events += [chunk(delta({}, "length")), chunk([], usage=usage, timings=_CANNED_TIMINGS)]
    else:
        events.append(chunk(delta({}, "length"), timings=_CANNED_TIMINGS))
    events.append(b"data: [DONE]\n\n")
    return _sse(events)


def _canned_completion(body: dict[str, Any]) -> UpstreamReply:
    usage = _openai_usage(prompt_tokens=11)

    def choice(text: str, finish_reason: str | None) -> list[dict[str, Any]]:
        return [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}]

    head = {
        "created": _CANNED_CREATED,
        "model": CANNED_MODEL,
        "system_fingerprint": _CANNED_FINGERPRINT,
        "object": "text_completion",
    }
    if body.get("stream") is not True:
        return _llama_json(
            {
                "choices": choice(CANNED_TEXT, "length"),
                **head,
                "usage": usage,
                "id": _CANNED_ID,
                "timings": _CANNED_TIMINGS,
            }
        )
    events = [_data_event({"choices": choice(token, None), **head, "id": _CANNED_ID}) for token in CANNED_TOKENS]
    final = {"choices": choice("", "length"), **head, "usage": usage, "id": _CANNED_ID, "timings": _CANNED_TIMINGS}
    events += [_data_event(final), b"data: [DONE]\n\n"]
    return _sse(events)


def _canned_embeddings(body: dict[str, Any]) -> UpstreamReply:
    inputs = body.get("input")
    count = len(inputs) if isinstance(inputs, list) else 1
    return _llama_json(
        {
            "model": body.get("model", CANNED_MODEL),  # llama-server echoes the request's model here
            "object": "list",
            "usage": {"prompt_tokens": 5 * count, "total_tokens": 5 * count},
            "data": [{"embedding": _CANNED_EMBEDDING, "index": i, "object": "embedding"} for i in range(count)],
        }
    )


def _canned_messages(body: dict[str, Any]) -> UpstreamReply:
    message = {"id": _CANNED_ID, "type": "message", "role": "assistant"}
    if body.get("stream") is not True:
        return _llama_json(
            {
                **message,
                "content": [{"type": "text", "text": CANNED_TEXT}],
                "model": CANNED_MODEL,
                "stop_reason": "max_tokens",
                "stop_sequence": None,
                "usage": {"cache_read_input_tokens": 0, "input_tokens": 24, "output_tokens": len(CANNED_TOKENS)},
            }
        )
    start: dict[str, Any] = {
        **message,
        "content": [],
        "model": CANNED_MODEL,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"cache_read_input_tokens": 0, "input_tokens": 24, "output_tokens": 0},
    }
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": token}}
            for token in CANNED_TOKENS
        ),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"output_tokens": len(CANNED_TOKENS)},
        },
        {"type": "message_stop"},
    ]
    return _sse(_typed_event(event) for event in events)


def _canned_count_tokens(body: dict[str, Any]) -> UpstreamReply:
    return _llama_json({"input_tokens": 24})


_CANNED_POSTS: dict[str, Callable[[dict[str, Any]], UpstreamReply]] = {
    "/v1/chat/completions": _canned_chat,
    "/v1/completions": _canned_completion,
    "/v1/embeddings": _canned_embeddings,
    "/v1/messages": _canned_messages,
    "/v1/messages/count_tokens": _canned_count_tokens,
}


def _canned_reply(request: RecordedRequest) -> UpstreamReply:
    """llama-server's answer to `request`, routed as llama-server routes (wrong method: 404)."""
    if request.method == "GET" and request.path in ("/health", "/v1/health"):
        return _llama_json({"status": "ok"})
    if request.method == "GET" and request.path in ("/v1/models", "/models"):
        return _canned_models()
    handler = _CANNED_POSTS.get(request.path) if request.method == "POST" else None
    if handler is None:
        return _llama_error(404, "not_found_error", "File Not Found")
    if not isinstance(request.json, dict):
        return _llama_error(500, "server_error", "[json.exception.parse_error.101] parse error: not a JSON object")
    return handler(request.json)
