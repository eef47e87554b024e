"""`gguf-mcp ask`: a first answer from the terminal, streamed through the server's own upstream
client, against the gateway emulator and llama.cpp's server; failures as the tools word them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.bridge import Bridge
from tests.support.calls import text_of
from tests.support.cli import run_cli
from tests.support.gateway import ACCOUNT_KEY, CANNED_TEXT, Fault, Gateway
from tests.support.llama import LlamaServer

WRONG_KEY = "sk-canary-ask-wrong-key-61d0e2"
SECRETS = (ACCOUNT_KEY, WRONG_KEY)


def ask(env: dict[str, str], *args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """`gguf-mcp ask ...` as a user runs it, with exactly `env`; fails the test if a secret shows."""
    out = run_cli("ask", *args, env=env, timeout=90, stdout=stdout)
    for secret in SECRETS:
        assert secret not in (out.stdout or "") + out.stderr
    return out


def test_the_answer_streams_from_the_chat_route_with_the_real_auth(gateway: Gateway) -> None:
    gateway.add_canned_deployment("dep-canned")
    env = {"GGUF_BASE_URL": gateway.base_url_for("dep-canned"), "MODELSLAB_API_KEY": ACCOUNT_KEY}
    out = ask(env, "--max-tokens", "8", "Say hello")
    assert out.returncode == 0, out.stderr
    assert out.stdout == CANNED_TEXT + "\n"
    # The canned answer stops at its token limit: said once, on stderr, so stdout is the answer alone.
    assert out.stderr == "[cut off at max_tokens=8: ask again with a larger --max-tokens]\n"
    (request,) = gateway.requests_for("dep-canned")
    assert (request.path, request.auth_via) == ("/v1/chat/completions", "bearer")
    assert request.json == {
        "model": "local",
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_llama_server_answers_and_the_text_arrives_piece_by_piece(gw: Gateway) -> None:
    """Cut after 4 events: the pieces that came are already on stdout, the failure is one line."""
    gw.inject("dep-main", Fault.cut_stream(after_events=4))
    env = {"GGUF_BASE_URL": gw.base_url_for("dep-main"), "MODELSLAB_API_KEY": ACCOUNT_KEY, "GGUF_MCP_MAX_RETRIES": "0"}
    out = ask(env, "--max-tokens", "16", "Hello there")
    assert out.returncode == 1
    # The text of the events before the cut (the first is the role, without text), on a line of its own.
    assert len(out.stdout) > 1 and out.stdout.endswith("\n")
    (line,) = out.stderr.splitlines()
    assert line.startswith("gguf-mcp: stream broken: The answer from deployment 'default' broke off mid-stream (")
    assert line.endswith("). Try again.")
    whole = ask(env, "--max-tokens", "4", "Hello there")
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.endswith("\n") and len(whole.stdout) > 1


@pytest.mark.anyio
async def test_a_failure_is_one_line_with_the_text_the_chat_tool_gives(gw: Gateway, tmp_path: Path) -> None:
    env = {"GGUF_BASE_URL": gw.base_url_for("dep-main"), "MODELSLAB_API_KEY": WRONG_KEY}
    out = ask(env, "Hello there")
    async with Bridge("stdio", tmp_path).connect(env) as client:
        result = await client.call_tool("chat", {"messages": [{"role": "user", "content": "Hello there"}]})
    assert result.is_error
    assert out.returncode == 1
    assert out.stdout == ""
    told = text_of(result).removeprefix("Error executing tool chat: ")  # the SDK's words, then ours
    assert told.startswith("Deployment 'default' rejected the API key (HTTP 401")
    assert out.stderr == f"gguf-mcp: key rejected: {told}\n"


def test_an_unknown_deployment_is_a_usage_error(gateway: Gateway, tmp_path: Path) -> None:
    config = tmp_path / "two.toml"
    config.write_text(
        '[deployments.a]\nbase_url = "http://127.0.0.1:9"\n[deployments.b]\nbase_url = "http://127.0.0.1:8"\n'
    )
    out = ask({"GGUF_MCP_CONFIG": str(config)}, "--deployment", "c", "Hello")
    assert out.returncode == 2
    assert out.stderr == "gguf-mcp: unknown deployment: Unknown deployment 'c'. Configured deployments: a, b.\n"
    bad = ask({"GGUF_MCP_CONFIG": str(config)}, "--max-tokens", "lots", "Hello")
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[-1] == (
        "gguf-mcp ask: error: argument --max-tokens: expected a whole number from 1 to 2147483647, got 'lots'"
    )


def test_a_reader_that_leaves_stops_the_generation_quietly(gw: Gateway, llama_server: LlamaServer) -> None:
    """`gguf-mcp ask ... | head -c 1`: no traceback, and the upstream request is closed at once."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first piece arrives
    try:
        env = {"GGUF_BASE_URL": gw.base_url_for("dep-main"), "MODELSLAB_API_KEY": ACCOUNT_KEY}
        out = ask(env, "--max-tokens", "4000", "Hello there", stdout=write_end)
    finally:
        os.close(write_end)
    assert (out.returncode, out.stderr) == (141, "")
    (cut,) = gw.wait_for_disconnects(1)  # the deployment's stream was closed mid-answer
    assert cut.path == "/v1/chat/completions"
    assert llama_server.wait_until_idle()
