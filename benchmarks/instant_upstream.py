"""An upstream that answers instantly: llama-server's response shapes from a raw asyncio server.

Run as a subprocess by the benchmarks so the time measured is the bridge's, not the model's.
Prints `LISTENING <port>` once ready. Keep-alive HTTP/1.1, fixed bodies, no validation.
"""

from __future__ import annotations

import asyncio
import json
import sys

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


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in header_lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            path = request_line.split(" ")[1]
            body = MESSAGES if path.endswith("/messages") else MODELS if path.endswith("/models") else CHAT
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
