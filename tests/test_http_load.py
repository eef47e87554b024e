"""Bounded load: 20 concurrent official-client sessions x 10 calls, every answer matched to its call.

Against one gguf-mcp process (stateful, the default) and against the README's multi-worker
command (stateless, two uvicorn workers on one port). Four named deployments on the gateway:
each call names one and carries a unique message, so an answer routed to the wrong call, or a
call lost or sent twice, shows up in the results or in what the gateway received.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.support.bridge import Launcher, gguf_mcp_argv, http_server, uvicorn_workers_argv
from tests.support.gateway import CANNED_TEXT, Gateway
from tests.support.load import content_for, run_sessions

pytestmark = pytest.mark.timeout(300)

SESSIONS = 20
CALLS = 10
DEPLOYMENTS = ["d0", "d1", "d2", "d3"]
TOKEN = "tok-canary-load-0b7e5c2a-9d41f6e3b8c2"

SERVERS: dict[str, tuple[Launcher, dict[str, str]]] = {
    "one-process-stateful": (gguf_mcp_argv, {}),
    "two-workers-stateless": (
        lambda port: uvicorn_workers_argv(port, 2, "--timeout-graceful-shutdown", "5"),
        # Debug level so each worker logs its upstream requests (JSON lines carry the pid).
        {"GGUF_MCP_STATELESS": "true", "GGUF_MCP_LOG_FORMAT": "json", "GGUF_MCP_LOG_LEVEL": "debug"},
    ),
}


@pytest.mark.parametrize("kind", list(SERVERS))
async def test_every_call_of_every_session_is_answered_with_its_own_result(
    gateway: Gateway, tmp_path: Path, kind: str
) -> None:
    launcher, settings = SERVERS[kind]
    settings = settings | {"GGUF_MCP_AUTH_TOKEN": TOKEN}
    with http_server(gateway, tmp_path, settings, deployments=DEPLOYMENTS, launcher=launcher) as server:
        records, _ = await run_sessions(server.url, SESSIONS, CALLS, DEPLOYMENTS, token=TOKEN)

    assert len(records) == SESSIONS * CALLS
    assert len({(r.session, r.call) for r in records}) == SESSIONS * CALLS
    for record in records:
        assert not record.result.is_error, record.result.content
        assert record.result.structured_content is not None
        assert record.result.structured_content["deployment"] == record.deployment
        assert record.result.structured_content["text"] == CANNED_TEXT

    # Upstream, each call arrived exactly once, at the deployment it named.
    sent = Counter(
        (r.deployment_id, r.json["messages"][0]["content"])
        for r in gateway.requests
        if r.path == "/v1/chat/completions" and isinstance(r.json, dict)
    )
    expected = Counter((r.deployment, content_for(r.session, r.call)) for r in records)
    assert sent == expected

    if kind == "two-workers-stateless":
        upstream_calls_by_worker = Counter(
            line["pid"]
            for line in map(json.loads, json_lines(server.stderr()))
            if line["logger"] == "gguf_mcp.upstream" and "/v1/chat/completions" in line["message"]
        )
        assert len(upstream_calls_by_worker) == 2, upstream_calls_by_worker
        assert sum(upstream_calls_by_worker.values()) == SESSIONS * CALLS


def json_lines(stderr: str) -> list[str]:
    """The workers' JSON lines (uvicorn's supervisor process logs a few plain lines of its own)."""
    return [line for line in stderr.splitlines() if line.startswith("{")]
