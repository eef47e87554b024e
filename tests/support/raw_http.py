"""A loopback server that answers every HTTP request with the same raw bytes.

For answers no ASGI server (so not the gateway emulator) can send: a malformed status line,
header line or chunk header. It reads each request whole (head and Content-Length body), counts
it, writes `answer`, and closes the connection.

    with raw_http_server(b"HTTP/1.1 2x0 nonsense\\r\\n\\r\\n") as server:
        ... server.url ... server.requests
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_READ_TIMEOUT_S = 10.0


class RawServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answer: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Answer)
        self.answer = answer
        self._count = 0
        self._lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def requests(self) -> int:
        """How many whole requests arrived."""
        with self._lock:
            return self._count

    def counted(self) -> None:
        with self._lock:
            self._count += 1


class _Answer(socketserver.StreamRequestHandler):
    server: RawServer

    def handle(self) -> None:
        self.connection.settimeout(_READ_TIMEOUT_S)
        length = 0
        while (line := self.rfile.readline(65536)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if line == b"":
            return  # the client closed without a whole request
        self.rfile.read(length)
        self.server.counted()
        self.wfile.write(self.server.answer)
        self.wfile.flush()


@contextmanager
def raw_http_server(answer: bytes) -> Iterator[RawServer]:
    """A started server answering `answer` to every request; stopped on exit."""
    server = RawServer(answer)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=f"raw http {server.url}", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def not_http(secret: str) -> dict[str, bytes]:
    """Answers the HTTP parser refuses, each quoting `secret` in the part it refuses, by where it is."""
    quoted = secret.encode()
    return {
        "status line": b"HTTP/1.1 2x0 " + quoted + b"\r\n\r\n",
        "header line": b"HTTP/1.1 200 OK\r\nbroken header " + quoted + b"\r\ncontent-length: 2\r\n\r\n{}",
        "chunk header": b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"zz"
        + quoted
        + b"\r\ndata: {}\r\n",
    }
