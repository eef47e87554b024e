"""Experiment C: the stdio transport without a thread per line.

The SDK's `stdio_server()` wraps stdin and stdout with `anyio.wrap_file`, so every request line
read, every response written and every flush is a round trip to a worker thread (three per
call). `stdio_server(stdin=..., stdout=...)` accepts other streams; these read and write the
pipes on the event loop (`loop.connect_read_pipe` / `connect_write_pipe`). Like the SDK, fd 0
and fd 1 are first moved to private descriptors and pointed at /dev/null and stderr, so stray
output from handlers or children cannot corrupt the wire. Only pipes, sockets and character
devices can be watched by the event loop; anything else (stdin redirected from a file) keeps
the SDK's own transport.

`apply()` replaces `MCPServer.run_stdio_async` in this process.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server

_SDK_RUN_STDIO = MCPServer.run_stdio_async
LINE_LIMIT = 2**26  # the longest request line (a big conversation); the SDK's reader has none


class _Lines:
    """`async for line in ...` over a pipe, as `anyio.AsyncFile` gives it (str, newline kept)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        line = await self._reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class _Writer:
    """`write` + `flush` as `anyio.AsyncFile` has them; `flush` waits for the pipe to drain."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self._writer.drain()


def _watchable(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


def _claim(fd: int, diversion: int) -> int:
    """Move `fd` to a private descriptor and point `fd` at `diversion`; return the private one."""
    private = os.dup(fd)
    os.dup2(diversion, fd)
    os.close(diversion)
    return private


@asynccontextmanager
async def pipe_streams() -> AsyncIterator[tuple[_Lines, _Writer]]:
    loop = asyncio.get_running_loop()
    stdin_fd = _claim(0, os.open(os.devnull, os.O_RDONLY))
    stdout_fd = _claim(1, os.dup(2))
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(stdin_fd, "rb", buffering=0)
    )
    write_transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), os.fdopen(stdout_fd, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(write_transport, protocol, None, loop)
    try:
        yield _Lines(reader), _Writer(writer)
    finally:
        read_transport.close()
        write_transport.close()


async def run_stdio_async(self: MCPServer[Any]) -> None:
    if not (_watchable(0) and _watchable(1)) or sys.platform == "win32":
        await _SDK_RUN_STDIO(self)
        return
    async with pipe_streams() as (lines, out), stdio_server(stdin=lines, stdout=out) as (read_stream, write_stream):  # type: ignore[arg-type]
        await self._lowlevel_server.run(
            read_stream, write_stream, self._lowlevel_server.create_initialization_options()
        )


def apply() -> None:
    setattr(MCPServer, "run_stdio_async", run_stdio_async)  # noqa: B010 - replacing a method
