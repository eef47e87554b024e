"""The scale benchmark's load: C concurrent MCP sessions over Streamable HTTP, lean enough not to be the bottleneck.

Each session is one keep-alive HTTP/1.1 connection (asyncio protocol callbacks, hand-built
JSON-RPC, no HTTP library) that, in stateful mode, runs the `initialize` handshake, then calls
`chat` and `messages` in turn with a progress token and reads each call's SSE stream to its end.
Progress notifications are not parsed as JSON: the token stamps (`@<monotonic> `, see
`benchmarks/emulator.py`) are found in the raw event, and each one's lag is this process's
`time.monotonic()` when the event completed minus the stamp. The result is parsed, and a call
counts as correct only if its text holds exactly `max_tokens` stamps, the same ones, in the same
order, as its progress notifications carried (nothing lost, nothing doubled).

Protocol with the benchmark (`benchmarks/scale.py`), over stdin/stdout: connect all sessions,
print `READY <seconds> <failed sessions>`, wait for a `GO` line, then each session starts its first
call at a staggered moment over `--ramp` seconds and keeps calling until `--window` seconds after
GO; calls still running `--drain` seconds after that are abandoned (counted). Writes a JSON
summary to `--out` and prints `DONE`.

    .venv/bin/python -m benchmarks.loadgen --url http://127.0.0.1:8000/mcp --sessions 100 --out /tmp/l.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.common import pct, raise_fd_limit

STAMP = re.compile(rb"@(\d+\.\d{6}) ")
PROTOCOL_VERSION = "2025-11-25"


class HTTPError(Exception):
    pass


@dataclass
class Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    message: dict[str, Any] | None = None  # the JSON-RPC answer (SSE `data:` or a JSON body)


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; one request at a time; SSE events handed to `on_event` as they complete."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._reset()

    def _reset(self) -> None:
        self.buffer = b""
        self.response = Response()
        self.head_done = False
        self.chunked = False
        self.length = -1
        self.sse = False
        self.events = b""
        self.got_bytes = False
        self.done: asyncio.Future[Response] | None = None
        self.on_event: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionResetError("connection closed before the response ended"))

    def request(self, raw: bytes, on_event: Any) -> asyncio.Future[Response]:
        assert self.transport is not None
        self._reset()
        self.done = asyncio.get_running_loop().create_future()
        self.on_event = on_event
        self.transport.write(raw)
        return self.done

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.got_bytes = True
        self.buffer += data
        if not self.head_done:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            self.buffer = self.buffer[end + 4 :]
            self.response.status = int(lines[0].split(" ", 2)[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                self.response.headers[name.strip().lower()] = value.strip()
            self.head_done = True
            self.chunked = self.response.headers.get("transfer-encoding", "").lower() == "chunked"
            self.length = int(self.response.headers.get("content-length", "-1"))
            self.sse = self.response.headers.get("content-type", "").startswith("text/event-stream")
        if self.chunked:
            while True:
                line_end = self.buffer.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(self.buffer[:line_end].split(b";", 1)[0], 16)
                if len(self.buffer) < line_end + 2 + size + 2:
                    return
                payload = self.buffer[line_end + 2 : line_end + 2 + size]
                self.buffer = self.buffer[line_end + 2 + size + 2 :]
                if size == 0:
                    self._finish(now)
                    return
                self._payload(payload, now)
        elif self.length >= 0 and len(self.buffer) >= self.length:
            self._payload(self.buffer[: self.length], now)
            self.buffer = self.buffer[self.length :]
            self._finish(now)
        # neither: a body until close (not sent by uvicorn for these answers)

    def _payload(self, payload: bytes, now: float) -> None:
        if not self.sse:
            self.response.body += payload
            return
        self.events += payload
        while True:
            end = self.events.find(b"\r\n\r\n")
            sep = 4
            if end < 0:
                end, sep = self.events.find(b"\n\n"), 2
                if end < 0:
                    return
            event = self.events[:end]
            self.events = self.events[end + sep :]
            if b"notifications/progress" in event:
                self.on_event(event, now)
                continue
            data = event.find(b"data:")
            if data >= 0:
                self.response.message = json.loads(event[data + 5 :])

    def _finish(self, now: float) -> None:
        if not self.sse and self.response.body:
            with contextlib.suppress(ValueError):
                self.response.message = json.loads(self.response.body)
        if self.done is not None and not self.done.done():
            self.done.set_result(self.response)


@dataclass
class Totals:
    """What every session measured; summarised at the end."""

    lags: array[float] = field(default_factory=lambda: array("d"))  # every token
    newest: array[float] = field(default_factory=lambda: array("d"))  # newest token of each notification
    by_second: dict[int, list[float]] = field(default_factory=dict)  # newest-token lags by second since GO
    first_progress: array[float] = field(default_factory=lambda: array("d"))  # call sent -> first notification
    durations: array[float] = field(default_factory=lambda: array("d"))
    calls: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    notifications: int = 0
    tokens: int = 0
    reconnects: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    go: float = 0.0
    cpu_at_go: float = 0.0


class Session:
    def __init__(self, index: int, options: argparse.Namespace, totals: Totals, run: str) -> None:
        self.index, self.options, self.totals, self.run = index, options, totals, run
        url = urlsplit(options.url)
        self.host, self.port, self.path = url.hostname or "127.0.0.1", url.port or 80, url.path or "/"
        self.session_id: str | None = None
        self.conn: Connection | None = None
        self.next_id = 0

    async def _connection(self) -> Connection:
        if self.conn is None or self.conn.transport is None or self.conn.transport.is_closing():
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(Connection, self.host, self.port)
            self.conn = conn
        return self.conn

    def _raw(self, message: dict[str, Any]) -> bytes:
        body = json.dumps(message, separators=(",", ":")).encode()
        head = (
            f"POST {self.path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            "accept: application/json, text/event-stream\r\ncontent-type: application/json\r\n"
            f"mcp-protocol-version: {PROTOCOL_VERSION}\r\ncontent-length: {len(body)}\r\n"
        )
        if self.session_id:
            head += f"mcp-session-id: {self.session_id}\r\n"
        return head.encode() + b"\r\n" + body

    async def send(self, message: dict[str, Any], on_event: Any = None) -> Response:
        """One request; resent once on a fresh connection if a kept-alive one was found closed before any answer."""
        raw = self._raw(message)
        for attempt in range(2):
            conn = await self._connection()
            try:
                return await conn.request(raw, on_event)
            except ConnectionResetError:
                if attempt or conn.got_bytes:
                    raise
                self.totals.reconnects += 1
        raise AssertionError("unreachable")

    async def initialize(self) -> None:
        self.next_id += 1
        hello = {
            "jsonrpc": "2.0",
            "id": self.next_id,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "gguf-mcp-loadgen", "version": "0"},
            },
        }
        answer = await self.send(hello)
        if answer.status != 200 or not answer.message or "result" not in answer.message:
            raise HTTPError(f"initialize: HTTP {answer.status} {answer.message}")
        self.session_id = answer.headers.get("mcp-session-id")
        done = await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if done.status not in (200, 202):
            raise HTTPError(f"notifications/initialized: HTTP {done.status}")

    async def call(self, number: int) -> None:
        opts, totals = self.options, self.totals
        tool = opts.tools[number % len(opts.tools)]
        self.next_id += 1
        prompt = f"{self.run} session {self.index} call {number}"
        arguments = {"messages": [{"role": "user", "content": prompt}], "max_tokens": opts.max_tokens}
        message = {
            "jsonrpc": "2.0",
            "id": self.next_id,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": {"progressToken": self.next_id}},
        }
        seen: list[bytes] = []
        sent = time.monotonic()
        first: list[float] = []

        def on_event(event: bytes, now: float) -> None:
            stamps = STAMP.findall(event)
            totals.notifications += 1
            if not first:
                first.append(now)
            if stamps:
                totals.tokens += len(stamps)  # counted as they arrive: a call abandoned at the end still forwarded them
                seen.extend(stamps)
                for stamp in stamps:
                    totals.lags.append(now - float(stamp))
                newest = now - float(stamps[-1])
                totals.newest.append(newest)
                totals.by_second.setdefault(int(now - totals.go), []).append(newest)

        totals.in_flight += 1
        totals.peak_in_flight = max(totals.peak_in_flight, totals.in_flight)
        try:
            answer = await self.send(message, on_event)
        finally:
            totals.in_flight -= 1
        totals.durations.append(time.monotonic() - sent)
        if first:
            totals.first_progress.append(first[0] - sent)
        totals.calls[tool] += 1
        if answer.status != 200 or answer.message is None:
            raise HTTPError(f"HTTP {answer.status}")
        result = answer.message.get("result")
        if not isinstance(result, dict):
            raise HTTPError(f"JSON-RPC error {str(answer.message.get('error'))[:80]}")
        if result.get("isError"):
            raise HTTPError("tool error: " + str(result.get("content"))[:120])
        text = (result.get("structuredContent") or {}).get("text", "")
        expected = STAMP.findall(text.encode())
        if len(expected) != opts.max_tokens:
            raise HTTPError(f"result holds {len(expected)} tokens, not {opts.max_tokens}")
        if expected != seen:
            raise HTTPError("progress tokens differ from the result's")

    async def run_calls(self, start_at: float, stop_at: float) -> None:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        number = self.index  # sessions alternate tools from their first call
        while time.monotonic() < stop_at:
            try:
                await self.call(number)
            except (HTTPError, OSError) as exc:
                self.totals.errors[_kind(exc)] += 1
            number += 1


def _kind(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return re.sub(r"\d+", "N", text)[:140]


def summary(totals: Totals, options: argparse.Namespace, abandoned: int, seconds: float) -> dict[str, Any]:
    def q(values: array[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "n": len(ordered),
            "p50_ms": pct(ordered, 0.5) * 1000,
            "p99_ms": pct(ordered, 0.99) * 1000,
            "max_ms": (ordered[-1] * 1000) if ordered else float("nan"),
        }

    return {
        "sessions": options.sessions,
        "calls": dict(totals.calls),
        "calls_total": sum(totals.calls.values()),
        "errors": dict(totals.errors),
        "errors_total": sum(totals.errors.values()),
        "abandoned": abandoned,
        "tokens": totals.tokens,
        "notifications": totals.notifications,
        "reconnects": totals.reconnects,
        "peak_in_flight": totals.peak_in_flight,
        "token_lag": q(totals.lags),
        "newest_token_lag": q(totals.newest),
        "first_progress": q(totals.first_progress),
        "call_seconds": q(totals.durations),
        "newest_lag_p99_by_second_ms": {
            str(s): pct(v, 0.99) * 1000 for s, v in sorted(totals.by_second.items()) if s >= 0
        },
        "seconds": seconds,
        "cpu_s": time.process_time() - totals.cpu_at_go,  # this process's CPU from GO to the end
    }


async def main(options: argparse.Namespace) -> None:
    totals = Totals()
    run = f"run-{time.time_ns()}"
    sessions = [Session(i, options, totals, run) for i in range(options.sessions)]
    started = time.monotonic()
    failed = 0
    gate = asyncio.Semaphore(options.connect_concurrency)

    async def connect(session: Session) -> bool:
        async with gate:
            try:
                if not options.stateless:
                    await session.initialize()
                else:
                    await session._connection()
                return True
            except (HTTPError, OSError) as exc:
                totals.errors["connect: " + _kind(exc)] += 1
                return False

    ok = await asyncio.gather(*(connect(s) for s in sessions))
    failed = ok.count(False)
    print(f"READY {time.monotonic() - started:.2f} {failed}", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    if line.strip() != "GO":
        return
    totals.go = go = time.monotonic()
    totals.cpu_at_go = time.process_time()
    stop_at = go + options.window
    live = [s for s, good in zip(sessions, ok, strict=True) if good]
    tasks = [
        asyncio.ensure_future(s.run_calls(go + options.ramp * i / max(1, len(live)), stop_at))
        for i, s in enumerate(live)
    ]
    done, pending = await asyncio.wait(tasks, timeout=options.window + options.drain)
    for task in pending:
        task.cancel()
    for task in done:
        if task.exception() is not None:
            totals.errors["crash: " + _kind(task.exception())] += 1  # type: ignore[arg-type]
    seconds = time.monotonic() - go
    for s in sessions:
        if s.conn is not None and s.conn.transport is not None:
            s.conn.transport.close()
    out = json.dumps(summary(totals, options, len(pending), seconds))
    await loop.run_in_executor(None, Path(options.out).write_text, out)
    print("DONE", flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the MCP endpoint, http://127.0.0.1:PORT/mcp")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--stateless", action="store_true", help="no initialize handshake, no session id")
    parser.add_argument("--tools", default="chat,messages", type=lambda s: s.split(","))
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--window", type=float, default=12.0, help="seconds after GO during which calls start")
    parser.add_argument("--ramp", type=float, default=3.5, help="first calls spread over this many seconds")
    parser.add_argument("--drain", type=float, default=20.0, help="then at most this long for calls to end")
    parser.add_argument("--connect-concurrency", type=int, default=32)
    parser.add_argument("--out", required=True)
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = parse()
    raise_fd_limit()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(options))
