"""The stdio transport, read and written on the event loop instead of worker threads.

The SDK's `stdio_server()` wraps stdin and stdout with `anyio.wrap_file`: every request line
read, every response written and every flush is a round trip to a worker thread, three per
call, about a third of the SDK's own cost per call. `stdio_server(stdin=..., stdout=...)`
accepts other streams; these read and write the pipes with `loop.connect_read_pipe` /
`connect_write_pipe`.

As the SDK does, fd 0 and fd 1 are moved to private descriptors for the life of the transport
and pointed at the null device and stderr, so stray output from handlers or children cannot
corrupt the wire; both are restored on exit, with their blocking mode (the event loop sets
O_NONBLOCK, which a launcher sharing the pipe would otherwise inherit). Only pipes and sockets
are taken this way; a terminal, a regular file or Windows keeps the SDK's transport.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server

log = logging.getLogger(__name__)

LINE_LIMIT = 2**26
"""The longest request line read (64 MiB): a long conversation fits, an endless line does not."""


class _Lines:
    """`async for line in ...` over a pipe, as `anyio.AsyncFile` gives it (str, newline kept)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        while True:
            try:
                line = await self._reader.readline()
            except ValueError:  # longer than LINE_LIMIT: what was buffered is dropped, and the
                # line's remainder arrives as a line that does not parse (the SDK logs it)
                log.error("Dropped a request line longer than %d MiB", LINE_LIMIT // 2**20)
                continue
            if not line:
                raise StopAsyncIteration
            return line.decode("utf-8", errors="replace")


class _Writer:
    """`write` + `flush` as `anyio.AsyncFile` has them; `flush` waits while the pipe is full."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self._writer.drain()


def _pipe_or_socket(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


@asynccontextmanager
async def _claimed(fd: int, diversion: int) -> AsyncIterator[int]:
    """A private duplicate of `fd` while `fd` points at `diversion`; all restored on exit."""
    import fcntl

    private = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    blocking = os.get_blocking(private)
    try:
        os.dup2(diversion, fd)
    finally:
        os.close(diversion)
    try:
        yield private
    finally:
        with suppress(OSError):
            os.set_blocking(private, blocking)
        with suppress(OSError):
            os.dup2(private, fd)
        os.close(private)


@asynccontextmanager
async def pipe_streams() -> AsyncIterator[tuple[_Lines, _Writer]]:
    """stdin as lines and stdout as a writer, both on the running event loop."""
    loop = asyncio.get_running_loop()
    async with AsyncExitStack() as stack:
        stdin_fd = await stack.enter_async_context(_claimed(0, os.open(os.devnull, os.O_RDONLY)))
        stdout_fd = await stack.enter_async_context(_claimed(1, os.dup(2)))
        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(stdin_fd, "rb", buffering=0, closefd=False)
        )
        stack.callback(read_transport.close)
        write_transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()),
            os.fdopen(stdout_fd, "wb", buffering=0, closefd=False),
        )
        # `flush` returns once every byte is in the pipe (the loop writes at once when it can, so
        # this costs nothing), and nothing is left to write after the descriptor is closed.
        write_transport.set_write_buffer_limits(high=0)

        def drop_writer() -> None:  # the reader may have closed the pipe, and so the transport, first
            if not write_transport.is_closing():
                write_transport.abort()

        stack.callback(drop_writer)
        yield _Lines(reader), _Writer(asyncio.StreamWriter(write_transport, protocol, None, loop))


async def run_stdio(server: MCPServer[Any]) -> None:
    """`server.run_stdio_async()`, on the event loop when stdin and stdout are pipes or sockets."""
    if sys.platform == "win32" or not (_pipe_or_socket(0) and _pipe_or_socket(1)):
        await server.run_stdio_async()
        return
    lowlevel = server._lowlevel_server  # what run_stdio_async runs; the SDK has no public handle to it
    async with (
        pipe_streams() as (lines, out),
        stdio_server(stdin=lines, stdout=out) as (read_stream, write_stream),  # type: ignore[arg-type]
    ):
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
