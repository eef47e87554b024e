"""The stdio transport (the SDK's own) as launchers wire it: pipes (Python clients), socket pairs
(Node, whose libuv hands children sockets), and a plain file (a script replaying requests).

A launcher shares the open files with gguf-mcp, so they must come back as they were (blocking).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.support.bridge import base_env
from tests.support.gateway import ACCOUNT_KEY, Gateway

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
LIST_TOOLS = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
CHAT = {
    "jsonrpc": "2.0",
    "id": 3,
    "method": "tools/call",
    "params": {"name": "chat", "arguments": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}},
}
REQUESTS = b"".join(json.dumps(m).encode() + b"\n" for m in (INITIALIZE, INITIALIZED, LIST_TOOLS, CHAT))


@pytest.fixture
def env(gateway: Gateway) -> dict[str, str]:
    gateway.add_canned_deployment("dep-stdio")
    return base_env() | {"GGUF_BASE_URL": gateway.base_url_for("dep-stdio"), "MODELSLAB_API_KEY": ACCOUNT_KEY}


def answers(output: bytes) -> dict[int, dict[str, Any]]:
    """The responses on stdout by id; anything on stdout that is not JSON-RPC fails the test."""
    found = {}
    for line in output.splitlines():
        message = json.loads(line)
        assert message["jsonrpc"] == "2.0"
        found[message["id"]] = message
    return found


def check(found: dict[int, dict[str, Any]]) -> None:
    assert set(found) == {1, 2, 3}
    assert found[1]["result"]["serverInfo"]["name"] == "gguf-mcp"
    assert {t["name"] for t in found[2]["result"]["tools"]} >= {"chat", "messages"}
    assert found[3]["result"]["isError"] is False


@pytest.mark.parametrize("wiring", ["pipe", "socketpair"])
def test_a_launcher_sharing_the_descriptors_gets_them_back_blocking(
    env: dict[str, str], wiring: Literal["pipe", "socketpair"]
) -> None:
    if wiring == "pipe":
        child_in, ours_in = os.pipe()
        ours_out, child_out = os.pipe()
    else:
        a, b = socket.socketpair()
        c, d = socket.socketpair()
        child_in, ours_in, ours_out, child_out = a.detach(), b.detach(), c.detach(), d.detach()
    # The launcher keeps its own copies of the child's ends, as uvx and shells do.
    kept_in, kept_out = os.dup(child_in), os.dup(child_out)
    process = subprocess.Popen(
        [sys.executable, "-m", "gguf_mcp"], stdin=child_in, stdout=child_out, stderr=subprocess.PIPE, env=env
    )
    os.close(child_in)
    os.close(child_out)
    try:
        with os.fdopen(ours_in, "wb") as to_child:
            to_child.write(REQUESTS)
            to_child.flush()
            with os.fdopen(ours_out, "rb") as from_child:
                lines = [from_child.readline() for _ in range(3)]
        _, stderr = process.communicate(timeout=30)
        check(answers(b"".join(lines)))
        assert process.returncode == 0, stderr.decode()
        assert os.get_blocking(kept_in)
        assert os.get_blocking(kept_out)
    finally:
        process.kill()
        os.close(kept_in)
        os.close(kept_out)


def test_stdin_from_a_file_is_served(env: dict[str, str], tmp_path: Path) -> None:
    """The file ends at once, which the SDK takes as the client leaving: calls still running may
    be cut, but the handshake is answered and nothing but JSON-RPC reaches stdout."""
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(REQUESTS)
    with requests.open("rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-m", "gguf_mcp"], stdin=stdin, capture_output=True, env=env, timeout=30, check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    assert b"Traceback" not in done.stderr
    found = answers(done.stdout)
    assert 1 in found, done.stdout
    assert found[1]["result"]["serverInfo"]["name"] == "gguf-mcp"
    assert set(found) <= {1, 2, 3}
