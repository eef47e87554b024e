"""An upstream that answers instantly: llama-server's response shapes from a raw asyncio server.

Run as a subprocess by the benchmarks so the time measured is the bridge's, not the model's.
Prints `LISTENING <port>` once ready. Keep-alive HTTP/1.1, fixed bodies, no validation.

- A body with `"stream": true` gets an SSE answer (chunked, like llama-server): a role event,
  one event per token, the finish event, the usage event and `[DONE]` (chat completions only).
- `GET /_stats` answers `{"connections": N, "requests": M}`: TCP connections accepted and
  requests answered so far, not counting `/_stats` itself nor a connection that only asked for
  it. The benchmarks read it before and after a block of calls to count the connections a
  system opened (a pooled client opens one and keeps it).
- `--close-after N` closes each connection, without a `Connection: close` header, right after
  its N-th answer. llama-server closes a kept-alive connection after 100 requests (announcing
  it on a plain answer) and after every streamed answer (without announcing it).

    .venv/bin/python -m benchmarks.instant_upstream [--close-after 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

TOKENS = ["2y", "GX", "~+", "'Y"]
CHAT = json.dumps(
    {
        "choices": [{"finish_reason": "length", "index": 0, "message": {"role": "assistant", "content": "2yGX~+'Y"}}],
        "created": 1795645412,
        "model": "instant",
        "object": "chat.completion",
        "usage": {"completion_tokens": 8, "prompt_tokens": 32, "total_tokens": 40},
        "id": "chatcmpl-instant",
    }
).encode()
MESSAGES = json.dumps(
    {
        "id": "chatcmpl-instant",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "2yGtyGXB"}],
        "model": "instant",
        "stop_reason": "max_tokens",
        "stop_sequence": None,
        "usage": {"input_tokens": 13, "output_tokens": 8},
    }
).encode()
MODELS = json.dumps(
    {"object": "list", "data": [{"id": "instant", "object": "model", "meta": {"n_ctx": 2048}}]}
).encode()


def _chunk(choices: list[dict[str, object]], **extra: object) -> dict[str, object]:
    return {
        "choices": choices,
        "created": 1795645412,
        "id": "chatcmpl-instant",
        "model": "instant",
        "object": "chat.completion.chunk",
        **extra,
    }


def _sse_body() -> bytes:
    events = [_chunk([{"finish_reason": None, "index": 0, "delta": {"role": "assistant", "content": None}}])]
    events += [_chunk([{"finish_reason": None, "index": 0, "delta": {"content": t}}]) for t in TOKENS]
    events.append(_chunk([{"finish_reason": "length", "index": 0, "delta": {}}]))
    events.append(_chunk([], usage={"completion_tokens": 8, "prompt_tokens": 32, "total_tokens": 40}))
    out = b""
    for data in [*(json.dumps(e, separators=(",", ":")) for e in events), "[DONE]"]:
        payload = f"data: {data}\n\n".encode()
        out += b"%x\r\n%s\r\n" % (len(payload), payload)  # one chunk per event, as llama-server sends them
    return out + b"0\r\n\r\n"


STREAM = _sse_body()
STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


class Upstream:
    def __init__(self, close_after: int | None) -> None:
        self.close_after = close_after
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = 0
        counted = False
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                length = 0
                for line in header_lines:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                path = request_line.split(" ")[1]
                if path == "/_stats":
                    stats = json.dumps({"connections": self.connections, "requests": self.requests}).encode()
                    writer.write(self._plain(stats))
                    await writer.drain()
                    continue
                if not counted:
                    counted = True
                    self.connections += 1
                self.requests += 1
                answered += 1
                if b'"stream"' in body and json.loads(body).get("stream") is True:
                    writer.write(STREAM_HEAD + STREAM)
                else:
                    answer = MESSAGES if path.endswith("/messages") else MODELS if path.endswith("/models") else CHAT
                    writer.write(self._plain(answer))
                await writer.drain()
                if self.close_after and answered >= self.close_after:
                    break  # no `Connection: close`: the client learns it on its next request
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _plain(body: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--close-after", type=int, default=None, metavar="N")
    upstream = Upstream(parser.parse_args().close_after)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
