"""An emulated remote deployment for the scale benchmark: llama-server's streaming routes at a set pace.

`POST /v1/chat/completions` (OpenAI) and `POST /v1/messages` (Anthropic) stream, whatever the
body says about `stream`: after `--ttft` seconds the first token, then one token every
`--interval` seconds up to the request's `max_tokens` (default 16), then the closing events.
`GET /v1/models` lists one model, `GET /props` its slot count (`total_slots`, as llama-server does:
gguf-mcp's fair queue reads it). `GET /_stats` answers the emulator's own view as JSON (below).

Every token's text is its send stamp, `@<CLOCK_MONOTONIC seconds, 6 decimals> `, taken just
before the event is written to the socket. The bridge forwards the generated text in its
progress notifications, so a client that receives one can compute each token's lag as its own
`time.monotonic()` minus the stamps in the message (one machine, one clock).

`--parallel N` slots, like llama-server: a request beyond N waits (FIFO) for a slot, and its
time to first token starts when it gets one.

One asyncio loop, protocol callbacks (no task per stream), events pre-built as byte templates
with only the stamp filled in per token: so that it is not the bottleneck (`/_stats` gives its CPU
seconds, and the benchmark reads them from /proc too).

The emulator's own view, per stream, in `/_stats`:
- `completed`: every byte of the answer written before the client closed the connection;
- `cut`: the client closed the connection while the answer was still being generated (a
  cancelled call, or a bridge giving up); `queued_gone`: closed while waiting for a slot;
- `resent`: requests whose body (the prompt carries a unique id) had been seen before;
- `peak_streams`, `peak_queued`, `connections`, `requests`, `cpu_s`.
`POST /_reset` zeroes the counters.

    .venv/bin/python -m benchmarks.emulator [--port 0] [--ttft 0.3] [--interval 0.05] [--parallel 100000]

Prints `LISTENING <port>` once ready. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

_JSON = {"separators": (",", ":")}
MODEL = "emu"


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, **_JSON)  # type: ignore[arg-type]
    return (f"event: {event}\n" if event else "").encode() + f"data: {text}\n\n".encode()


def _template(event: bytes) -> tuple[bytes, bytes]:
    """Split a pre-built event around the token text `TOKEN`: the stamp goes between the halves."""
    head, tail = event.split(b"TOKEN")
    return head, tail


def _chat_chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "choices": choices,
        "created": 1795645412,
        "id": "chatcmpl-emu",
        "model": MODEL,
        "object": "chat.completion.chunk",
        **extra,
    }


CHAT_FIRST = _sse(_chat_chunk([{"finish_reason": None, "index": 0, "delta": {"role": "assistant", "content": None}}]))
CHAT_TOKEN = _template(_sse(_chat_chunk([{"finish_reason": None, "index": 0, "delta": {"content": "TOKEN"}}])))


def chat_last(tokens: int) -> bytes:
    usage = {"completion_tokens": tokens, "prompt_tokens": 16, "total_tokens": 16 + tokens}
    return (
        _sse(_chat_chunk([{"finish_reason": "length", "index": 0, "delta": {}}]))
        + _sse(_chat_chunk([], usage=usage))
        + _sse("[DONE]")
    )


_START = {
    "type": "message_start",
    "message": {
        "id": "msg-emu",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": MODEL,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 16, "output_tokens": 0},
    },
}
MESSAGES_FIRST = _sse(_START, "message_start") + _sse(
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}, "content_block_start"
)
MESSAGES_TOKEN = _template(
    _sse(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "TOKEN"}},
        "content_block_delta",
    )
)


def messages_last(tokens: int) -> bytes:
    return (
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        + _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                "usage": {"output_tokens": tokens},
            },
            "message_delta",
        )
        + _sse({"type": "message_stop"}, "message_stop")
    )


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
MODELS = json.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "emu", "meta": {"n_ctx": 8192}}]}
).encode()
LAST_CHUNK = b"0\r\n\r\n"


def plain(body: bytes, status: str = "200 OK") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        status.encode(),
        len(body),
        body,
    )


@dataclass
class Stats:
    connections: int = 0
    requests: int = 0
    streams: int = 0
    completed: int = 0
    cut: int = 0
    queued_gone: int = 0
    resent: int = 0
    tokens: int = 0
    peak_streams: int = 0
    peak_queued: int = 0
    seen: set[bytes] = field(default_factory=set)

    def view(self, active: int, queued: int) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "seen"}
        return out | {"active": active, "queued": queued, "cpu_s": time.process_time()}


class Emulator:
    def __init__(self, ttft: float, interval: float, parallel: int) -> None:
        self.ttft, self.interval, self.parallel = ttft, interval, parallel
        self.stats = Stats()
        self.active = 0
        self.waiting: deque[Stream] = deque()
        self.loop = asyncio.get_running_loop()

    def admit(self, stream: Stream) -> None:
        self.stats.streams += 1
        if self.active < self.parallel:
            self._start(stream)
        else:
            self.waiting.append(stream)
            self.stats.peak_queued = max(self.stats.peak_queued, len(self.waiting))

    def _start(self, stream: Stream) -> None:
        self.active += 1
        self.stats.peak_streams = max(self.stats.peak_streams, self.active)
        stream.begin(self.loop.time() + self.ttft)

    def release(self, stream: Stream) -> None:
        if stream in self.waiting:
            self.waiting.remove(stream)
            self.stats.queued_gone += 1
            return
        self.active -= 1
        while self.waiting and self.active < self.parallel:
            self._start(self.waiting.popleft())


class Stream:
    """One streamed answer, driven by loop timers: each callback writes one event and schedules the next."""

    def __init__(self, conn: Connection, anthropic: bool, max_tokens: int) -> None:
        self.conn, self.anthropic, self.max_tokens = conn, anthropic, max_tokens
        self.sent = 0
        self.timer: asyncio.TimerHandle | None = None
        self.started = False
        self.next_at = 0.0

    def begin(self, first_at: float) -> None:
        self.started = True
        self.next_at = first_at
        self.timer = self.conn.emu.loop.call_at(first_at, self.tick)

    def tick(self) -> None:
        conn, emu = self.conn, self.conn.emu
        if conn.transport is None or conn.transport.is_closing():
            return
        head, tail = MESSAGES_TOKEN if self.anthropic else CHAT_TOKEN
        out = b""
        if self.sent == 0:
            out = STREAM_HEAD + _chunked(MESSAGES_FIRST if self.anthropic else CHAT_FIRST)
        self.sent += 1
        emu.stats.tokens += 1
        stamp = b"@%.6f " % time.monotonic()
        out += _chunked(head + stamp + tail)
        if self.sent >= self.max_tokens:
            last = messages_last(self.sent) if self.anthropic else chat_last(self.sent)
            conn.transport.write(out + _chunked(last) + LAST_CHUNK)
            emu.stats.completed += 1
            self.timer = None
            conn.stream_done()
            return
        conn.transport.write(out)
        self.next_at += emu.interval
        self.timer = emu.loop.call_at(self.next_at, self.tick)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Connection(asyncio.Protocol):
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.stream: Stream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.emu.stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.cancel()
            if stream.started:
                self.emu.stats.cut += 1
            self.emu.release(stream)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.stream is None:  # one request at a time, as HTTP/1.1 without pipelining
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, path = head.split(" ", 2)[:2]
            self.answer(method, path, body)

    def answer(self, method: str, path: str, body: bytes) -> None:
        assert self.transport is not None
        emu = self.emu
        if path == "/_stats":
            self.transport.write(plain(json.dumps(emu.stats.view(emu.active, len(emu.waiting))).encode()))
            return
        if path == "/_reset" and method == "POST":
            emu.stats = Stats()
            self.transport.write(plain(b"{}"))
            return
        emu.stats.requests += 1
        if path.endswith("/models"):
            self.transport.write(plain(MODELS))
            return
        if path == "/props":
            self.transport.write(plain(json.dumps({"total_slots": emu.parallel}).encode()))
            return
        if method != "POST" or not path.endswith(("/chat/completions", "/messages")):
            self.transport.write(plain(b'{"error":{"message":"not found"}}', "404 Not Found"))
            return
        try:
            request = json.loads(body)
            messages = request["messages"]
            max_tokens = int(request.get("max_tokens") or 16)
        except (ValueError, KeyError, TypeError):
            self.transport.write(plain(b'{"error":{"message":"bad request"}}', "400 Bad Request"))
            return
        fingerprint = json.dumps(messages, sort_keys=True).encode()
        if fingerprint in emu.stats.seen:
            emu.stats.resent += 1
        else:
            emu.stats.seen.add(fingerprint)
        self.stream = Stream(self, path.endswith("/messages"), max(1, max_tokens))
        emu.admit(self.stream)

    def stream_done(self) -> None:
        stream, self.stream = self.stream, None
        assert stream is not None
        self.emu.release(stream)
        if self.buffer:  # a request that arrived meanwhile (pipelined)
            self.data_received(b"")


async def serve(port: int, ttft: float, interval: float, parallel: int, ready: asyncio.Event | None = None) -> None:
    emu = Emulator(ttft, interval, parallel)
    server = await asyncio.get_running_loop().create_server(lambda: Connection(emu), "127.0.0.1", port, backlog=4096)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft", type=float, default=0.3, help="seconds to the first token (default 0.3)")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between tokens (default 0.05)")
    parser.add_argument("--parallel", type=int, default=100_000, help="slots; requests beyond wait (FIFO)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.ttft, args.interval, args.parallel))


if __name__ == "__main__":
    main()
