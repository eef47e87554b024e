"""What one client can hold on the HTTP transport: sessions (capped, closed when idle) and
connections (capped, closed when they do not finish a request header in time)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gguf_mcp.config import parse_settings
from tests.support.bridge import ServerProcess, base_env, canned_deployments, free_port, gguf_mcp_argv, serving
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
    settings = parse_settings({"transport": "http"}, {"GGUF_BASE_URL": "http://127.0.0.1:9"})
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
