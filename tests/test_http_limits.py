"""What one client can hold on the HTTP transport: sessions (capped, closed when idle) and
connections (capped, closed when they do not finish a request header in time)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gguf_mcp.config import load_settings
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
from tests.support.gateway import Gateway

pytestmark = pytest.mark.anyio

TOKEN = "tok-canary-limits-7c2e9a41d0b85f36"
INITIALIZE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "authorization": f"Bearer {TOKEN}",
}
BOUND_S = 30.0
"""Longest any wait here may take: a bound on a loop, not a timing assertion."""


def limited_env(gateway: Gateway, workdir: Path, **settings: str) -> dict[str, str]:
    env = base_env() | canned_deployments(gateway, workdir / "d.toml", ["alpha"])
    return env | {"GGUF_MCP_AUTH_TOKEN": TOKEN} | settings


def open_session(http: httpx.Client, server: ServerProcess) -> httpx.Response:
    return http.post(server.url, json=INITIALIZE, headers=HEADERS)


# --- Sessions --------------------------------------------------------------------------------------


def test_the_session_defaults_are_a_few_hundred_sessions_idle_ten_minutes() -> None:
    settings = load_settings({"transport": "http"}, {"GGUF_BASE_URL": "http://127.0.0.1:9"})
    assert (settings.max_sessions, settings.session_idle_timeout) == (256, 600.0)


def test_sessions_past_the_cap_get_503_until_one_ends(gateway: Gateway, tmp_path: Path) -> None:
    port = free_port()
    env = limited_env(gateway, tmp_path, GGUF_MCP_MAX_SESSIONS="3")
    with serving(gguf_mcp_argv(port), port, env, tmp_path / "stderr") as server, httpx.Client(timeout=10) as http:
        opened = [open_session(http, server) for _ in range(3)]
        assert [r.status_code for r in opened] == [200, 200, 200]
        refused = open_session(http, server)
        assert refused.status_code == 503
        ended = http.delete(server.url, headers=HEADERS | {"mcp-session-id": opened[0].headers["mcp-session-id"]})
        assert ended.status_code == 200
        assert open_session(http, server).status_code == 200


def test_an_idle_session_is_closed_after_the_idle_time_out(gateway: Gateway, tmp_path: Path) -> None:
    port = free_port()
    env = limited_env(gateway, tmp_path, GGUF_MCP_MAX_SESSIONS="1", GGUF_MCP_SESSION_IDLE_TIMEOUT="1")
    with serving(gguf_mcp_argv(port), port, env, tmp_path / "stderr") as server, httpx.Client(timeout=10) as http:
        first = open_session(http, server)
        assert first.status_code == 200
        # The only slot is taken until the first session has idled out; asking for a new one does
        # not touch the first (it carries no session id), so this loop ends when the server frees it.
        deadline = time.monotonic() + BOUND_S
        while (second := open_session(http, server)).status_code == 503:
            assert time.monotonic() < deadline, "the idle session was never closed"
            time.sleep(0.1)  # polling a subprocess: there is no event to wait on
        assert second.status_code == 200
        stale = http.post(
            server.url,
            json={"jsonrpc": "2.0", "id": 2, "method": "ping"},
            headers=HEADERS | {"mcp-session-id": first.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"},
        )
        assert stale.status_code == 404


# --- Connections -----------------------------------------------------------------------------------

HALF_A_HEADER = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: applica"
OPEN_FILES = 128
"""The server's open-file limit in these tests: an attack past it needs ~130 sockets, not 1,100."""


def limited_argv(port: int) -> list[str]:
    """gguf-mcp with a small open-file limit, so a modest attack reaches it as 1,100 sockets reach 1,024."""
    return ["prlimit", f"--nofile={OPEN_FILES}:", "--", *gguf_mcp_argv(port)]


@contextmanager
def half_headers(server: ServerProcess, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that each send half a request header and then wait (slowloris)."""
    with ExitStack() as stack:
        sockets: list[socket.socket] = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection((server.host, server.port), timeout=BOUND_S))
            sock.sendall(HALF_A_HEADER)
            sockets.append(sock)
        yield sockets


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed `sock` (EOF or reset) within BOUND_S; False if it is still open then."""
    deadline = time.monotonic() + BOUND_S
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            if sock.recv(65536) == b"":
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        pass
    return False


@pytest.mark.parametrize("runner", ["gguf-mcp", "uvicorn-workers"])
@pytest.mark.parametrize("sent", [b"", HALF_A_HEADER], ids=["idle", "half-a-header"])
def test_a_connection_without_a_complete_header_is_closed_after_the_header_time_out(
    gateway: Gateway, tmp_path: Path, sent: bytes, runner: str
) -> None:
    port = free_port()
    env = limited_env(gateway, tmp_path, GGUF_MCP_HEADER_TIMEOUT="1")
    argv = gguf_mcp_argv(port) if runner == "gguf-mcp" else uvicorn_workers_argv(port, 1)
    with serving(argv, port, env, tmp_path / "stderr") as server:
        with socket.create_connection((server.host, server.port)) as sock:
            sock.sendall(sent)
            assert closed_by_server(sock)
        # Also between requests: a kept-alive connection that starts its next header and stalls.
        with socket.create_connection((server.host, server.port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")  # the rest is read (and dropped) below
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0")
            assert closed_by_server(sock)
    assert "Traceback" not in server.stderr()


async def test_past_the_connection_cap_health_and_clients_are_still_answered(gateway: Gateway, tmp_path: Path) -> None:
    """More half-header connections than the server has file descriptors; the oldest waiting make room."""
    port = free_port()
    # A header time-out longer than the test: what keeps the server answering here is the cap.
    env = limited_env(gateway, tmp_path, GGUF_MCP_MAX_CONNECTIONS="40", GGUF_MCP_HEADER_TIMEOUT="600")
    with serving(limited_argv(port), port, env, tmp_path / "stderr") as server, half_headers(server, OPEN_FILES + 20):
        async with httpx.AsyncClient(timeout=BOUND_S) as http:
            health = await http.get(f"{server.root}/healthz")
        async with connect_http(server.url, TOKEN) as client:
            listed = await client.call_tool("list_models", {})
    assert health.status_code == 200
    assert not listed.is_error
    assert "Traceback" not in server.stderr()
