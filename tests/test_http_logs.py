"""Logs over HTTP: quiet by default (no access or per-request upstream lines), JSON when asked,
with request ids, and never a secret, whatever a client puts in its headers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

from tests.support.bridge import connect_http, gguf_mcp_argv, http_server, uvicorn_workers_argv
from tests.support.gateway import ACCOUNT_KEY, Gateway

TOKEN = "tok-canary-logs-93a1f0d7e2-5b8c4a17f0"
USER = [{"role": "user", "content": "Hello there"}]
REQUEST_ID = re.compile(r"^[0-9a-f]{16}$")


def per_request_lines(log: str) -> list[str]:
    """uvicorn access-log lines and httpx's one line per upstream request."""
    return [line for line in log.splitlines() if "HTTP/1.1" in line or "HTTP Request:" in line]


@pytest.mark.parametrize("runner", ["gguf-mcp", "uvicorn-workers"])
async def test_by_default_nothing_is_logged_per_request(gateway: Gateway, tmp_path: Path, runner: str) -> None:
    launcher = gguf_mcp_argv if runner == "gguf-mcp" else lambda port: uvicorn_workers_argv(port, 2)
    with http_server(gateway, tmp_path, launcher=launcher) as server:
        async with connect_http(server.url) as client:
            for _ in range(3):
                assert not (await client.call_tool("chat", {"messages": USER, "max_tokens": 2})).is_error
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"{server.root}/readyz")).status_code == 200
    log = server.stderr()
    assert per_request_lines(log) == []
    if runner == "gguf-mcp":
        assert [line.split(": ", 1)[1] for line in log.splitlines()] == [
            f"listening on {server.url} (client token required: no; deployments: alpha)",
            f"stopped listening on {server.url}",
        ]


async def test_gguf_mcp_says_where_it_listens_and_when_it_stops_without_secrets(
    gateway: Gateway, tmp_path: Path
) -> None:
    settings = {"GGUF_MCP_AUTH_TOKEN": TOKEN, "GGUF_MCP_LOG_FORMAT": "json"}
    with http_server(gateway, tmp_path, settings, deployments=["alpha", "beta"]) as server:
        started = server.stderr()
    lines = [json.loads(line)["message"] for line in server.stderr().splitlines()]
    assert started.count("\n") == 1  # said once it listens, before any request
    assert lines == [
        f"listening on {server.url} (client token required: yes; deployments: alpha, beta)",
        f"stopped listening on {server.url}",
    ]
    assert TOKEN not in server.stderr()
    assert ACCOUNT_KEY not in server.stderr()


async def test_log_level_error_silences_the_start_and_stop_lines(gateway: Gateway, tmp_path: Path) -> None:
    with http_server(gateway, tmp_path, {"GGUF_MCP_LOG_LEVEL": "error"}) as server:
        pass
    assert server.stderr() == ""


@pytest.mark.parametrize("mode", ["legacy", "auto"])  # with sessions (2025 revisions) and without
async def test_json_logs_carry_request_ids_and_redact_secrets_from_client_headers(
    gateway: Gateway, tmp_path: Path, mode: str
) -> None:
    settings = {"GGUF_MCP_LOG_FORMAT": "json", "GGUF_MCP_LOG_LEVEL": "info", "GGUF_MCP_AUTH_TOKEN": TOKEN}
    with http_server(gateway, tmp_path, settings) as server:
        gateway.fail_next("alpha", 503, count=1)  # one retry inside the call: logged from the tool's context
        # A client echoing secrets in headers that get logged (refused Host and Origin).
        async with httpx.AsyncClient(timeout=10) as http:
            refused_host = await http.get(server.url, headers={"host": f"{TOKEN}.evil.example"})
            refused_origin = await http.post(
                server.url, json={}, headers={"origin": f"https://{ACCOUNT_KEY}.evil.example"}
            )
        call_ids: list[str] = []

        async def note_call_id(response: httpx2.Response) -> None:
            if b'"tools/call"' in response.request.content:
                call_ids.append(response.headers["x-request-id"])

        async with connect_http(server.url, TOKEN, on_response=note_call_id, mode=mode) as client:
            result = await client.call_tool("chat", {"messages": USER, "max_tokens": 2})
    assert (refused_host.status_code, refused_origin.status_code) == (421, 403)
    assert not result.is_error

    text = server.stderr()
    assert TOKEN not in text
    assert ACCOUNT_KEY not in text
    lines: list[dict[str, Any]] = [json.loads(line) for line in text.splitlines()]
    assert lines, "info level logs at least start-up"
    for line in lines:
        assert {"time", "level", "logger", "message", "pid"} <= set(line)
        assert line["time"].endswith("+00:00")

    def only(fragment: str) -> dict[str, Any]:
        (match,) = [line for line in lines if fragment in line["message"]]
        return match

    host_line, origin_line = only("Refused Host"), only("Refused Origin")
    assert "[redacted].evil.example" in host_line["message"]
    assert "[redacted].evil.example" in origin_line["message"]
    assert host_line["level"] == origin_line["level"] == "WARNING"
    assert host_line["request_id"] == refused_host.headers["x-request-id"]
    assert origin_line["request_id"] == refused_origin.headers["x-request-id"]

    # Logged inside the tool, in the session's task: still the id of the HTTP request of the call.
    retry_line = only("retrying in")
    assert retry_line["logger"] == "gguf_mcp.upstream"
    assert REQUEST_ID.match(retry_line["request_id"])
    assert [retry_line["request_id"]] == call_ids
    assert not any("request_id" in line for line in lines if "startup" in line["message"].lower())
