"""SIGTERM: stop accepting, let calls in flight finish within the bound, then exit cleanly.

Both ways to run the server: `gguf-mcp --transport http` (one process, bound SHUTDOWN_GRACE_S)
and the README's multi-worker uvicorn command (bound set by `--timeout-graceful-shutdown`).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.types import CallToolResult

from gguf_mcp.http import SHUTDOWN_GRACE_S
from tests.support.bridge import (
    Launcher,
    ServerProcess,
    connect_http,
    gguf_mcp_argv,
    http_server,
    open_files_limited,
    uvicorn_workers_argv,
)
from tests.support.gateway import CANNED_TEXT, Fault, Gateway

USER = [{"role": "user", "content": "Hello there"}]
WORKERS_BOUND_S = 10  # the README says 25; shorter here, still well above the call's 3 s
SHORT_BOUND_S = 3  # for a call that outlives it

LAUNCHERS: dict[str, tuple[Launcher, float]] = {
    "gguf-mcp": (gguf_mcp_argv, SHUTDOWN_GRACE_S),
    "uvicorn-2-workers-stateless": (
        lambda port: uvicorn_workers_argv(port, 2, "--timeout-graceful-shutdown", str(WORKERS_BOUND_S)),
        WORKERS_BOUND_S,
    ),
}


def short_bound_workers(port: int) -> list[str]:
    return uvicorn_workers_argv(port, 2, "--timeout-graceful-shutdown", str(SHORT_BOUND_S))


def stateless_for(launcher: str) -> dict[str, str]:
    return {"GGUF_MCP_STATELESS": "true"} if "stateless" in launcher else {}


async def exit_code_within(process: subprocess.Popen[bytes], seconds: float) -> tuple[int, float]:
    """Poll until the process exits; returns its exit code and when it was seen to exit."""
    deadline = time.monotonic() + seconds
    while (code := process.poll()) is None:
        assert time.monotonic() < deadline, f"still running {seconds} s after SIGTERM"
        await anyio.sleep(0.05)  # polling a child process: there is no awaitable exit event
    return code, time.monotonic()


async def no_longer_served(server: ServerProcess, within: float) -> bool:
    """Whether new connections stop being answered: refused (one process), or left in the listen
    backlog of uvicorn's supervisor, which holds the socket until its workers are gone."""
    deadline = time.monotonic() + within
    # A new connection each time: one accepted just as the server stops listening is still served.
    async with httpx.AsyncClient(timeout=0.5, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        while time.monotonic() < deadline:
            try:
                await http.get(f"{server.root}/healthz")
            except httpx.TransportError:
                return True
            await anyio.sleep(0.05)  # polling a listening socket: there is no event to wait on
    return False


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
async def test_a_call_in_flight_at_sigterm_completes_and_the_process_exits_soon_after(
    gateway: Gateway, tmp_path: Path, launcher: str, mode: str
) -> None:
    argv_for, bound = LAUNCHERS[launcher]
    settings = stateless_for(launcher) | {"GGUF_MCP_LOG_LEVEL": "info"}  # info: to see the lifespan end
    result: dict[str, Any] = {}
    with http_server(gateway, tmp_path, settings, launcher=argv_for) as server:
        gateway.inject("alpha", Fault.delay_first_byte(3))
        async with connect_http(server.url, mode=mode) as client:
            await client.list_tools()  # the client validates results against it; fetch it while we can

            async def call() -> None:
                result["value"] = await client.call_tool("chat", {"messages": USER, "max_tokens": 8})
                result["at"] = time.monotonic()

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await anyio.to_thread.run_sync(gateway.wait_for_requests, 1)
                server.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                # New requests stop at once (uvicorn's supervisor checks signals every 0.5 s);
                # the call in flight carries on.
                assert await no_longer_served(server, within=2.5), server.stderr()
                assert "value" not in result
        code, exited = await exit_code_within(server.process, bound + 5)
    answer: CallToolResult = result["value"]
    assert not answer.is_error, answer.content
    assert answer.structured_content is not None
    assert answer.structured_content["text"] == CANNED_TEXT
    # uvicorn re-raises the SIGTERM it handled once it is done, so the process may end by it.
    assert code in (0, -signal.SIGTERM)
    assert exited - signalled < bound
    assert exited - result["at"] < 3, "exits promptly once the last call is done"
    assert gateway.disconnects == []
    log = server.stderr()
    assert "Application shutdown complete" in log  # the lifespan ran: sessions and upstream pool closed
    assert "Traceback" not in log


async def test_a_call_outliving_the_bound_is_cut_and_the_process_still_exits_on_time(
    gateway: Gateway, tmp_path: Path
) -> None:
    outcome: dict[str, Any] = {}
    ended = anyio.Event()
    with http_server(gateway, tmp_path, {"GGUF_MCP_STATELESS": "true"}, launcher=short_bound_workers) as server:
        gateway.inject("alpha", Fault.delay_first_byte(60))

        async def client_calls() -> None:
            # How the client reports a cut stream (from the call, or from its own task group) is
            # the SDK's business; what matters is that it hears the end instead of hanging.
            try:
                async with connect_http(server.url, read_timeout_seconds=30) as client:
                    await client.list_tools()
                    outcome["result"] = await client.call_tool("chat", {"messages": USER, "max_tokens": 8})
            except Exception as exc:
                outcome["error"] = exc
            ended.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(client_calls)
            await anyio.to_thread.run_sync(gateway.wait_for_requests, 1)
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            code, exited = await exit_code_within(server.process, SHORT_BOUND_S + 5)
            with anyio.move_on_after(15):
                await ended.wait()
            tg.cancel_scope.cancel()
    assert code == 0
    assert SHORT_BOUND_S - 0.2 <= exited - signalled < SHORT_BOUND_S + 3, "the call got the bound, no more"
    assert ended.is_set(), "the client was left waiting"
    assert "error" in outcome or outcome["result"].is_error
    # The upstream request was held open for the bound, then closed (llama-server would stop generating).
    (disconnect,) = await anyio.to_thread.run_sync(gateway.wait_for_disconnects, 1)
    assert disconnect.path == "/v1/chat/completions"
    assert SHORT_BOUND_S - 0.2 <= disconnect.at - signalled < SHORT_BOUND_S + 3


OPEN_FILES = 64
"""The server's open-file limit here: a few hundred connections that send nothing exhaust it."""
FLOOD = 400
OUT_OF_DESCRIPTORS = "Out of file descriptors accepting connections"


def uvicorn_worker(port: int) -> list[str]:
    return uvicorn_workers_argv(port, 1)


async def logged(server: ServerProcess, text: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while text not in server.stderr():
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.05)  # polling a subprocess's log file: there is no event to wait on
    return True


@pytest.mark.parametrize("launcher", [gguf_mcp_argv, uvicorn_worker], ids=["gguf-mcp", "uvicorn"])
async def test_sigterm_at_the_open_file_limit_lets_the_call_finish_and_exits_with_one_warning(
    gateway: Gateway, tmp_path: Path, launcher: Launcher
) -> None:
    """Connections that send nothing, past the server's open-file limit: asyncio retries accept()
    a second later, once per attempt that found no descriptor (thousands). After SIGTERM, while the
    call in flight finishes, those retries land on the closed listener: no time, no log lines."""
    result: dict[str, Any] = {}
    with http_server(gateway, tmp_path, launcher=open_files_limited(OPEN_FILES, launcher)) as server:
        gateway.inject("alpha", Fault.delay_first_byte(3))
        async with connect_http(server.url) as client:
            await client.list_tools()

            async def call() -> None:
                result["value"] = await client.call_tool("chat", {"messages": USER, "max_tokens": 8})
                result["at"] = time.monotonic()

            with contextlib.ExitStack() as flood:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    await anyio.to_thread.run_sync(gateway.wait_for_requests, 1)
                    for _ in range(FLOOD):  # half-open: connected, never a byte
                        sock = flood.enter_context(socket.socket())
                        sock.setblocking(False)
                        with contextlib.suppress(BlockingIOError):
                            sock.connect((server.host, server.port))
                    assert await logged(server, OUT_OF_DESCRIPTORS, within=30), server.stderr()[-2000:]
                    server.process.send_signal(signal.SIGTERM)
                    signalled = time.monotonic()
                code, exited = await exit_code_within(server.process, 30)
    log = server.stderr()
    assert "Traceback" not in log, f"{log.count('Traceback')} tracebacks, {len(log)} bytes of stderr"
    assert log.count(OUT_OF_DESCRIPTORS) == 1
    assert not result["value"].is_error
    assert code in (0, -signal.SIGTERM)
    assert exited - result["at"] < 3, f"exited {exited - result['at']:.1f} s after its last call ended"
    assert exited - signalled < 3 + 3
