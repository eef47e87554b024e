"""SIGTERM: stop accepting, let calls in flight finish within the bound, then exit cleanly.

Both ways to run the server: `gguf-mcp --transport http` (one process, bound SHUTDOWN_GRACE_S)
and the README's multi-worker uvicorn command (bound set by `--timeout-graceful-shutdown`).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.types import CallToolResult

from gguf_mcp.http import SHUTDOWN_GRACE_S
from tests.support.bridge import (
    ServerProcess,
    base_env,
    canned_deployments,
    connect_http,
    free_port,
    gguf_mcp_argv,
    serving,
    uvicorn_workers_argv,
)
from tests.support.gateway import CANNED_TEXT, Fault, Gateway

pytestmark = pytest.mark.anyio

USER = [{"role": "user", "content": "Hello there"}]
WORKERS_BOUND_S = 10  # the README says 25; shorter here, still well above the call's 3 s
SHORT_BOUND_S = 3  # for a call that outlives it

Launcher = Callable[[int], list[str]]
LAUNCHERS: dict[str, tuple[Launcher, float]] = {
    "gguf-mcp": (gguf_mcp_argv, SHUTDOWN_GRACE_S),
    "uvicorn-2-workers-stateless": (
        lambda port: uvicorn_workers_argv(port, 2, "--timeout-graceful-shutdown", str(WORKERS_BOUND_S)),
        WORKERS_BOUND_S,
    ),
}


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
    env = base_env() | canned_deployments(gateway, tmp_path / "d.toml", ["alpha"]) | stateless_for(launcher)
    env["GGUF_MCP_LOG_LEVEL"] = "info"  # to see the lifespan end
    gateway.inject("alpha", Fault.delay_first_byte(3))
    port = free_port()
    result: dict[str, Any] = {}
    with serving(argv_for(port), port, env, tmp_path / "stderr") as server:
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
    env = base_env() | canned_deployments(gateway, tmp_path / "d.toml", ["alpha"]) | {"GGUF_MCP_STATELESS": "true"}
    gateway.inject("alpha", Fault.delay_first_byte(60))
    port = free_port()
    outcome: dict[str, Any] = {}
    ended = anyio.Event()
    argv = uvicorn_workers_argv(port, 2, "--timeout-graceful-shutdown", str(SHORT_BOUND_S))
    with serving(argv, port, env, tmp_path / "stderr") as server:

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
