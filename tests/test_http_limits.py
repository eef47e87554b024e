"""What one client can hold on the HTTP transport: sessions (capped, closed when idle) and
connections (capped, closed when they do not finish a request header, or its body, in time)."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from gguf_mcp.config import load_settings
from tests.support.bridge import (
    INITIALIZE,
    MCP_HEADERS,
    Launcher,
    ServerProcess,
    connect_http,
    gguf_mcp_argv,
    http_server,
    open_files_limited,
    uvicorn_workers_argv,
)
from tests.support.frameworks import OVERLAYS, ensure_framework
from tests.support.gateway import Gateway

TOKEN = "tok-canary-limits-7c2e9a41d0b85f36"
HEADERS = MCP_HEADERS | {"authorization": f"Bearer {TOKEN}"}
PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"
BOUND_S = 30.0
"""Longest any wait here may take: a bound on a loop, not a timing assertion."""


def open_session(http: httpx.Client, server: ServerProcess) -> httpx.Response:
    return http.post(server.url, json=INITIALIZE, headers=HEADERS)


# --- Sessions --------------------------------------------------------------------------------------


def test_the_session_defaults_are_a_few_hundred_sessions_idle_ten_minutes() -> None:
    settings = load_settings({"transport": "http"}, {"GGUF_BASE_URL": "http://127.0.0.1:9"})
    assert (settings.max_sessions, settings.session_idle_timeout) == (256, 600.0)


def test_sessions_past_the_cap_get_503_until_one_ends(gateway: Gateway, tmp_path: Path) -> None:
    settings = {"GGUF_MCP_AUTH_TOKEN": TOKEN, "GGUF_MCP_MAX_SESSIONS": "3"}
    with http_server(gateway, tmp_path, settings) as server, httpx.Client(timeout=10) as http:
        opened = [open_session(http, server) for _ in range(3)]
        assert [r.status_code for r in opened] == [200, 200, 200]
        refused = open_session(http, server)
        assert refused.status_code == 503
        ended = http.delete(server.url, headers=HEADERS | {"mcp-session-id": opened[0].headers["mcp-session-id"]})
        assert ended.status_code == 200
        assert open_session(http, server).status_code == 200


def test_an_idle_session_is_closed_after_the_idle_time_out(gateway: Gateway, tmp_path: Path) -> None:
    settings = {"GGUF_MCP_AUTH_TOKEN": TOKEN, "GGUF_MCP_MAX_SESSIONS": "1", "GGUF_MCP_SESSION_IDLE_TIMEOUT": "1"}
    with http_server(gateway, tmp_path, settings) as server, httpx.Client(timeout=10) as http:
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
ONE_BYTE_OF_BODY = (
    b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json, text/event-stream\r\n"
    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
)
"""A whole request header to an endpoint that reads the body (no token on loopback), and one byte of it."""
STALLS = {"idle": b"", "half-a-header": HALF_A_HEADER, "one-byte-of-body": ONE_BYTE_OF_BODY}
OPEN_FILES = 128
"""The server's open-file limit in these tests: an attack past it needs ~130 sockets, not 1,100."""


def uvicorn_worker(port: int) -> list[str]:
    return uvicorn_workers_argv(port, 1)


def line(version: str) -> str:
    """A uvicorn version's minor line ("0.55.0" -> "0.55")."""
    return ".".join(version.split(".")[:2])


def other_uvicorn() -> str:
    """The overlay (tests/support/frameworks.py) holding the uvicorn line this venv does not run."""
    (other,) = [
        name for name in OVERLAYS if name.startswith("uvicorn-") and name != f"uvicorn-{line(uvicorn.__version__)}"
    ]
    return other


def other_uvicorn_worker(port: int) -> list[str]:
    """The same command, run by a Python whose uvicorn is the other line pyproject.toml allows."""
    _, *rest = uvicorn_workers_argv(port, 1)
    return [str(ensure_framework(other_uvicorn())), *rest]


def other_uvicorn_gguf_mcp(port: int) -> list[str]:
    _, *rest = gguf_mcp_argv(port)
    return [str(ensure_framework(other_uvicorn())), *rest]


LAUNCHERS = {
    "gguf-mcp": gguf_mcp_argv,
    "uvicorn": uvicorn_worker,
    "other-uvicorn": other_uvicorn_worker,
}
"""GuardedH11Protocol extends uvicorn's own (not public) class: its guards run under both lines the range allows."""


def test_the_guards_run_under_each_uvicorn_line_the_dependency_allows() -> None:
    """pyproject.toml's uvicorn range is exactly the lines the guard tests run under: this venv's and the other one."""
    code = "import uvicorn; print(uvicorn.__version__)"
    python = ensure_framework(other_uvicorn())
    other = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert f"uvicorn=={other}" in OVERLAYS[other_uvicorn()]
    (floor, ceiling), *others = re.findall(r'"uvicorn>=([\d.]+),<([\d.]+)"', PYPROJECT.read_text())
    assert others == []
    tested = sorted({line(uvicorn.__version__), line(other)}, key=version_tuple)
    assert tested[0] == line(floor), "the range's floor is a line the guards run under"
    major, minor = version_tuple(tested[-1])
    assert version_tuple(ceiling) == (major, minor + 1), "the range stops right after the newest line tested"


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3])


@contextmanager
def stalled(server: ServerProcess, count: int, sent: bytes) -> Iterator[list[socket.socket]]:
    """`count` connections that each send `sent` and then wait (slowloris)."""
    with ExitStack() as stack:
        sockets: list[socket.socket] = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection((server.host, server.port), timeout=BOUND_S))
            sock.sendall(sent)
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


@pytest.mark.parametrize("launcher", list(LAUNCHERS.values()), ids=list(LAUNCHERS))
@pytest.mark.parametrize("sent", [b"", HALF_A_HEADER], ids=["idle", "half-a-header"])
def test_a_connection_without_a_complete_header_is_closed_after_the_header_time_out(
    gateway: Gateway, tmp_path: Path, sent: bytes, launcher: Launcher
) -> None:
    settings = {"GGUF_MCP_AUTH_TOKEN": TOKEN, "GGUF_MCP_HEADER_TIMEOUT": "1"}
    with http_server(gateway, tmp_path, settings, launcher=launcher) as server:
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


@pytest.mark.parametrize("launcher", list(LAUNCHERS.values()), ids=list(LAUNCHERS))
def test_a_request_whose_body_stalls_is_closed_after_the_body_time_out(
    gateway: Gateway, tmp_path: Path, launcher: Launcher
) -> None:
    """No token on loopback: a whole header and one byte of body reach the MCP endpoint, which waits for the rest."""
    # A header time-out longer than the test: only the body's deadline can close this connection.
    settings = {"GGUF_MCP_HEADER_TIMEOUT": "600", "GGUF_MCP_BODY_TIMEOUT": "1"}
    with http_server(gateway, tmp_path, settings, launcher=launcher) as server:
        with socket.create_connection((server.host, server.port)) as sock:
            sock.sendall(ONE_BYTE_OF_BODY)
            assert closed_by_server(sock), "a request body that never completes holds its connection for ever"
        # A body that does arrive in time is answered as usual, on a connection kept alive.
        with httpx.Client(timeout=BOUND_S) as http:
            assert http.post(server.url, json=INITIALIZE, headers=HEADERS).status_code == 200
            assert http.get(f"{server.root}/healthz").status_code == 200
    assert "Traceback" not in server.stderr()
    assert gateway.requests == []


@pytest.mark.parametrize(
    "launcher", [gguf_mcp_argv, other_uvicorn_gguf_mcp], ids=["gguf-mcp", "gguf-mcp-other-uvicorn"]
)
@pytest.mark.parametrize("sent", list(STALLS.values()), ids=list(STALLS))
async def test_past_the_connection_cap_health_and_clients_are_still_answered(
    gateway: Gateway, tmp_path: Path, sent: bytes, launcher: Launcher
) -> None:
    """More stalled connections than the server has file descriptors; the ones stalled longest make room.

    No token: on loopback anyone can open these, and reach an endpoint that waits for a body.
    """
    # Deadlines longer than the test: what keeps the server answering here is the cap.
    settings = {"GGUF_MCP_MAX_CONNECTIONS": "40", "GGUF_MCP_HEADER_TIMEOUT": "600", "GGUF_MCP_BODY_TIMEOUT": "600"}
    limited = open_files_limited(OPEN_FILES, launcher)
    with http_server(gateway, tmp_path, settings, launcher=limited) as server, stalled(server, OPEN_FILES + 20, sent):
        async with httpx.AsyncClient(timeout=BOUND_S) as http:
            health = await http.get(f"{server.root}/healthz")
        async with connect_http(server.url) as client:
            listed = await client.call_tool("list_models", {})
    assert health.status_code == 200
    assert not listed.is_error
    assert "Traceback" not in server.stderr()
