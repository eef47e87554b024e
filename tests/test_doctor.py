"""`gguf-mcp doctor`: the real command against the gateway emulator, llama.cpp's server and a
scripted OpenAI-only server; one line per check, exit codes 0/1/2, never a secret.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.bridge import Bridge, base_env, free_port
from tests.support.calls import text_of
from tests.support.cli import run_cli
from tests.support.gateway import (
    ACCOUNT_KEY,
    Exchange,
    Fault,
    Gateway,
    Message,
    Receive,
    Scope,
    Send,
    running_asgi_app,
)
from tests.support.llama import LLAMA_KEY, LlamaServer, running_llama_server

WRONG_KEY = "sk-canary-wrong-key-5be81f07aa"
HTTP_TOKEN = "tok-canary-doctor-0c4f9e12d7"
SECRETS = (ACCOUNT_KEY, WRONG_KEY, LLAMA_KEY, HTTP_TOKEN)


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`gguf-mcp doctor` as a user runs it, with exactly `env`; fails the test if a secret shows."""
    out = run_cli("doctor", *args, env=env, timeout=90)
    for secret in SECRETS:
        assert secret not in out.stdout + out.stderr
    return out


def lines(out: subprocess.CompletedProcess[str]) -> list[str]:
    return out.stdout.splitlines()


def two_deployments(gw: Gateway, tmp_path: Path, second: str = "dep-other") -> dict[str, str]:
    config = tmp_path / "doctor.toml"
    config.write_text(
        f'[deployments.main]\nbase_url = "{gw.base_url_for("dep-main")}"\n'
        f'[deployments.other]\nbase_url = "{gw.base_url_for(second)}"\n'
    )
    return {"GGUF_MCP_CONFIG": str(config), "MODELSLAB_API_KEY": ACCOUNT_KEY}


def test_a_healthy_deployment_passes_every_check_through_the_real_auth_headers(gw: Gateway) -> None:
    env = {
        "GGUF_BASE_URL": gw.base_url_for("dep-main"),
        "MODELSLAB_API_KEY": ACCOUNT_KEY,
        "GGUF_MCP_AUTH_TOKEN": HTTP_TOKEN,
    }
    out = doctor(env, "--log-level", "debug")  # debug logs every request: still no secret anywhere
    assert out.returncode == 0, out.stdout + out.stderr
    url = re.escape(gw.base_url_for("dep-main"))
    expected = [
        r"ok   configuration: valid; deployments: default",
        rf"ok   default: reachable at {url} \(GET /v1/models answered in \d+ ms\)",
        r"ok   default: key accepted \(MODELSLAB_API_KEY\)",
        r"ok   default: model tiny-test-model listed \(context 8192\)",
        r"ok   default: chat completion answered \(POST /v1/chat/completions, max_tokens 1, \d+ ms\)",
        r"ok   default: messages answered \(POST /v1/messages, max_tokens 1, \d+ ms\)",
        r"ok   default: completion answered \(POST /v1/completions, max_tokens 1, \d+ ms\)",
        r"ok   default: embeddings answered \(POST /v1/embeddings, one input, \d+ ms\)",
        r"All 8 checks passed: gguf-mcp is ready for your MCP client\.",
    ]
    assert len(lines(out)) == len(expected), out.stdout
    for line, pattern in zip(lines(out), expected, strict=True):
        assert re.fullmatch(pattern, line), line
    models, chat, messages, completion, embeddings = gw.requests_for("dep-main")
    assert (models.method, models.path, models.auth_via) == ("GET", "/v1/models", "bearer")
    assert (chat.path, chat.auth_via) == ("/v1/chat/completions", "bearer")
    assert (messages.path, messages.auth_via) == ("/v1/messages", "x-api-key")
    for request in (chat, messages):
        assert request.json == {"model": "local", "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 1}
    assert messages.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in messages.headers
    assert (completion.path, completion.auth_via) == ("/v1/completions", "bearer")
    assert completion.json == {"model": "local", "prompt": "Say OK.", "max_tokens": 1}
    assert (embeddings.path, embeddings.auth_via, embeddings.json) == ("/v1/embeddings", "bearer", {"input": "OK"})


def test_llama_server_itself_passes_with_its_key(llama_server: LlamaServer, tmp_path: Path) -> None:
    config = tmp_path / "local.toml"
    config.write_text(f'[deployments.main]\nbase_url = "{llama_server.v1_url}/"\n')
    out = doctor({"GGUF_MCP_CONFIG": str(config), "MODELSLAB_API_KEY": LLAMA_KEY})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok   main: model tiny-test-model listed (context 8192)" in lines(out)
    assert f"ok   main: reachable at {llama_server.url} " in out.stdout


def test_deployments_are_checked_concurrently_and_printed_in_order(gw: Gateway, tmp_path: Path) -> None:
    gw.inject("dep-main", Fault.delay_first_byte(1.5))  # the first deployment's model list is slow
    out = doctor(two_deployments(gw, tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    subjects = [line[5:].split(":")[0] for line in lines(out)[1:-1]]
    assert subjects == ["main"] * 7 + ["other"] * 7
    main_first, other_first = gw.requests_for("dep-main")[0], gw.requests_for("dep-other")[0]
    assert abs(other_first.at - main_first.at) < 1.0  # "other" did not wait for "main"
    other_last = gw.requests_for("dep-other")[-1]
    assert other_last.at < main_first.at + 1.5  # "other" was done before "main" got its first answer


def test_a_rejected_key_is_one_failure_and_stops_there(gw: Gateway) -> None:
    out = doctor({"GGUF_BASE_URL": gw.base_url_for("dep-main"), "MODELSLAB_API_KEY": WRONG_KEY})
    assert out.returncode == 1
    assert lines(out)[1].startswith("ok   default: reachable at ")
    assert lines(out)[2].startswith(
        "FAIL default: key rejected: Deployment 'default' rejected the API key (HTTP 401: Invalid API key.). "
        "Check MODELSLAB_API_KEY"
    )
    assert lines(out)[3] == "--   default: model and completions not checked until this is fixed"
    assert lines(out)[-1] == "1 check failed; fix it and run again."
    assert len(gw.requests) == 1  # never retried, never sent again to the other routes


class PassThrough(Fault):
    """The deployment's own answer (a placeholder in the fault queue)."""

    async def answer(self, exchange: Exchange) -> None:
        await exchange.pass_through()


def test_a_key_the_model_list_accepts_but_a_completion_route_rejects_fails_the_key_check(gw: Gateway) -> None:
    gw.inject("dep-main", PassThrough())  # GET /v1/models: fine
    gw.inject("dep-main", Fault.error(401))  # POST /v1/chat/completions: the key is refused
    out = doctor({"GGUF_BASE_URL": gw.base_url_for("dep-main"), "MODELSLAB_API_KEY": ACCOUNT_KEY})
    assert out.returncode == 1
    assert lines(out)[2].startswith("FAIL default: key rejected: Deployment 'default' rejected the API key (HTTP 401")
    assert "--   default: chat completion not checked: the key was rejected" in lines(out)
    assert "--   default: messages not checked: the key was rejected" in lines(out)
    assert [r.path for r in gw.requests_for("dep-main")] == ["/v1/models", "/v1/chat/completions"]


def test_one_failing_deployment_fails_the_run_but_not_the_others(gw: Gateway, tmp_path: Path) -> None:
    gw.set_unknown("dep-other")
    out = doctor(two_deployments(gw, tmp_path))
    assert out.returncode == 1
    assert [line for line in lines(out) if line.startswith("ok   main:")] == lines(out)[1:8]
    assert lines(out)[9].startswith("FAIL other: not found: Deployment 'other' was not found (HTTP 404")
    assert "Check its deployment id or base URL" in lines(out)[9]


def test_an_unreachable_deployment_says_so_and_checks_nothing_else() -> None:
    out = doctor({"GGUF_BASE_URL": f"http://127.0.0.1:{free_port()}", "GGUF_MCP_MAX_RETRIES": "0"})
    assert out.returncode == 1
    assert lines(out)[1].startswith("FAIL default: unreachable: Deployment 'default' (http://127.0.0.1:")
    assert "Check the URL and that the server is running." in lines(out)[1]
    assert lines(out)[2] == "--   default: key, model and completions not checked until this is fixed"


def test_a_deployment_that_stays_not_ready_is_retried_as_the_server_would_then_reported(gw: Gateway) -> None:
    gw.fail_next("dep-main", 503, count=5)
    env = {"GGUF_BASE_URL": gw.base_url_for("dep-main"), "MODELSLAB_API_KEY": ACCOUNT_KEY, "GGUF_MCP_MAX_RETRIES": "1"}
    out = doctor(env)
    assert out.returncode == 1
    assert lines(out)[1].startswith("FAIL default: not ready: Deployment 'default' is not ready (HTTP 503")
    assert "start it in the GGUF Cloud dashboard" in lines(out)[1]
    assert lines(out)[1].endswith("(gave up after 2 attempts)")
    assert len(gw.requests) == 2
    assert out.stderr == ""  # one line per check: retries show as "gave up after 2 attempts", not as log lines


def test_a_deployment_that_never_answers_is_reported_within_the_time_out(gw: Gateway) -> None:
    gw.inject("dep-main", Fault.delay_first_byte(30))
    env = {"GGUF_BASE_URL": gw.base_url_for("dep-main"), "MODELSLAB_API_KEY": ACCOUNT_KEY, "GGUF_MCP_TIMEOUT": "0.5"}
    out = doctor(env)
    assert out.returncode == 1
    assert lines(out)[1].startswith("FAIL default: timed out: Deployment 'default' (")
    assert "sent nothing for 0.5 s" in lines(out)[1]


def test_a_model_list_that_is_not_json_fails_that_check_only(gw: Gateway) -> None:
    gw.fail_next("dep-main", 200, body=b"<html><body>Welcome to nginx!</body></html>", content_type="text/html")
    out = doctor({"GGUF_BASE_URL": gw.base_url_for("dep-main"), "MODELSLAB_API_KEY": ACCOUNT_KEY})
    assert out.returncode == 1
    assert "FAIL default: model list: Deployment 'default' returned a body that is not JSON" in out.stdout
    assert "ok   default: chat completion answered" in out.stdout
    assert "ok   default: messages answered" in out.stdout


# --- a keyless server without the Anthropic route (an older llama-server, or vLLM) ---------------


async def _openai_only(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    while (message := await receive())["type"] == "http.request" and message.get("more_body", False):
        pass  # read the whole request before answering
    routes: dict[tuple[str, str], tuple[int, Any]] = {
        ("GET", "/v1/models"): (200, {"object": "list", "data": [{"id": "old-model", "object": "model"}]}),
        ("POST", "/v1/chat/completions"): (200, {"choices": [{"index": 0, "message": {"content": "O"}}]}),
    }
    status, body = routes.get((scope["method"], scope["path"]), (404, {"error": {"message": "File Not Found"}}))
    payload = json.dumps(body).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json")],
    }
    await send(start)
    await send({"type": "http.response.body", "body": payload})


@pytest.fixture
def openai_only() -> Iterator[str]:
    with running_asgi_app(_openai_only) as url:
        yield url


def test_a_missing_messages_route_is_blamed_on_the_route_not_the_deployment(openai_only: str) -> None:
    out = doctor({"GGUF_BASE_URL": openai_only})
    assert out.returncode == 1
    assert "ok   default: no key needed (MODELSLAB_API_KEY is not set and the server asked for none)" in lines(out)
    assert "ok   default: model old-model listed" in lines(out)
    assert any(line.startswith("ok   default: chat completion answered") for line in lines(out))
    (failure,) = [line for line in lines(out) if line.startswith("FAIL")]
    assert failure.startswith(
        "FAIL default: messages: Deployment 'default' answered but has no such route (HTTP 404: File Not Found)"
    )
    assert failure.endswith(
        "(/v1/models answered, so this server may not offer /v1/messages: update llama-server, or leave the "
        "messages tool out with GGUF_MCP_TOOLS.)"
    )
    # Completions and embeddings are not served either: information (`--`), not failures.
    assert (
        "--   default: completion not served: Deployment 'default' answered but has no such route (HTTP 404: File "
        "Not Found). Its llama-server may be too old for this API, or the base URL points below the deployment's "
        "root. The complete tool answers so when called; if that is expected, leave it out with GGUF_MCP_TOOLS."
    ) in lines(out)
    assert any(line.startswith("--   default: embeddings not served: ") for line in lines(out))
    assert lines(out)[-1] == "1 check failed; fix it and run again."


@pytest.mark.anyio
async def test_a_server_without_embeddings_is_ready_and_told_what_embed_will_answer(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    """llama-server started without --embeddings (the README's quick start) answers 501 there."""
    with running_llama_server(tiny_model_path, LLAMA_KEY, embeddings=False, log_path=tmp_path / "llama.log") as llama:
        env = {"GGUF_BASE_URL": llama.url, "MODELSLAB_API_KEY": LLAMA_KEY}
        out = doctor(env)
        async with Bridge("stdio", tmp_path).connect(env) as client:
            embedded = await client.call_tool("embed", {"input": "hello"})
    assert out.returncode == 0, out.stdout
    (note,) = [line for line in lines(out) if "embeddings" in line] or [f"no embeddings line in:\n{out.stdout}"]
    told = text_of(embedded).removeprefix("Error executing tool embed: ")
    assert embedded.is_error and "llama-server needs --embeddings" in told
    assert note == (
        f"--   default: embeddings not served: {told} The embed tool answers so when called; if that is expected, "
        "leave it out with GGUF_MCP_TOOLS."
    )
    assert "Start it with `--embeddings`" in note  # llama.cpp's own words
    assert any(line.startswith("ok   default: completion answered (POST /v1/completions") for line in lines(out))
    assert lines(out)[-1] == "All 7 checks passed (1 route not served): gguf-mcp is ready for your MCP client."


def test_tools_left_out_are_not_checked(openai_only: str) -> None:
    out = doctor({"GGUF_BASE_URL": openai_only, "GGUF_MCP_TOOLS": "list_models,chat"})
    assert out.returncode == 0, out.stdout
    assert "--   default: messages not checked: GGUF_MCP_TOOLS leaves the messages tool out" in lines(out)
    assert "--   default: completion not checked: GGUF_MCP_TOOLS leaves the complete tool out" in lines(out)
    assert "--   default: embeddings not checked: GGUF_MCP_TOOLS leaves the embed tool out" in lines(out)
    assert lines(out)[-1] == "All 5 checks passed (3 not applicable): gguf-mcp is ready for your MCP client."


# --- configuration and the command line ------------------------------------------------------------


def test_a_config_error_is_the_servers_own_line_and_exit_code_2() -> None:
    env = {"GGUF_BASE_URL": "http://127.0.0.1:1", "GGUF_MCP_TIMEOUT": "soon", "MODELSLAB_API_KEY": ACCOUNT_KEY}
    checked = doctor(env)
    served = subprocess.run(
        [sys.executable, "-m", "gguf_mcp"], env=base_env() | env, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == served.returncode == 2
    assert checked.stdout == ""
    assert checked.stderr == served.stderr
    assert checked.stderr.startswith("gguf-mcp: configuration error: GGUF_MCP_TIMEOUT (--timeout)")
    assert checked.stderr.count("\n") == 1


def test_flags_work_after_the_command_as_before_it(gw: Gateway) -> None:
    env = {"MODELSLAB_API_KEY": ACCOUNT_KEY}
    after = doctor(env, "--base-url", gw.base_url_for("dep-main"), "--tools", "chat")
    before = subprocess.run(
        [sys.executable, "-m", "gguf_mcp", "--base-url", gw.base_url_for("dep-main"), "--tools", "chat", "doctor"],
        env=base_env() | env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert after.returncode == before.returncode == 0, after.stdout + before.stdout
    assert "GGUF_MCP_TOOLS leaves the messages tool out" in after.stdout
    assert "GGUF_MCP_TOOLS leaves the messages tool out" in before.stdout


def test_a_key_flag_is_refused_by_doctor_too() -> None:
    out = doctor({"GGUF_BASE_URL": "http://127.0.0.1:1"}, "--api-key", WRONG_KEY)
    assert out.returncode == 2
    assert "--api-key is not accepted" in out.stderr


@pytest.mark.parametrize("command", [["doctor"], ["ask", "Hi"]], ids=["doctor", "ask"])
def test_doctor_and_ask_never_import_the_mcp_sdk(gateway: Gateway, command: list[str]) -> None:
    """They answer in a terminal: no second of the SDK's import before the first line."""
    gateway.add_canned_deployment("dep-canned")
    code = (
        f"import sys\nfrom gguf_mcp.cli import main\nrc = main({command!r})\n"
        "print('SDK' if any(m == 'mcp' or m.startswith('mcp.') for m in sys.modules) else 'NO-SDK', rc)"
    )
    env = {"GGUF_BASE_URL": gateway.base_url_for("dep-canned"), "MODELSLAB_API_KEY": ACCOUNT_KEY}
    out = subprocess.run([sys.executable, "-c", code], env=base_env() | env, capture_output=True, text=True, timeout=60)
    assert lines(out)[-1] == "NO-SDK 0", out.stdout + out.stderr


def test_https_to_a_plain_http_server_says_to_try_http(gw: Gateway) -> None:
    url = gw.base_url_for("dep-main").replace("http://", "https://", 1)
    out = doctor({"GGUF_BASE_URL": url, "MODELSLAB_API_KEY": ACCOUNT_KEY})
    assert out.returncode == 1
    assert lines(out)[1].startswith("FAIL default: not TLS: Deployment 'default'")
    assert "the server may not speak TLS; try http:// instead of https://" in lines(out)[1]
    assert gw.requests == []


def test_a_missing_key_is_named_as_missing_not_as_rejected(gw: Gateway) -> None:
    out = doctor({"GGUF_BASE_URL": gw.base_url_for("dep-main")})
    assert out.returncode == 1
    assert lines(out)[2].startswith("FAIL default: key missing: Deployment 'default' asks for an API key (HTTP 401")
    assert "and MODELSLAB_API_KEY is not set" in lines(out)[2]
    assert "rejected the API key" not in out.stdout


@dataclass(frozen=True)
class HeldUntil(Fault):
    """The deployment's own answer, once the test says so."""

    go: threading.Event

    async def answer(self, exchange: Exchange) -> None:
        await asyncio.to_thread(self.go.wait, 30)
        await exchange.pass_through()


def test_a_reader_that_leaves_ends_doctor_quietly(gw: Gateway) -> None:
    """`gguf-mcp doctor | head -1`: the reader takes the first line and goes; doctor's next line meets a
    closed pipe (the deployment answers only then), and doctor stops without a traceback."""
    go = threading.Event()
    gw.inject("dep-main", HeldUntil(go))
    env = base_env() | {"GGUF_BASE_URL": gw.base_url_for("dep-main"), "MODELSLAB_API_KEY": ACCOUNT_KEY}
    with subprocess.Popen(
        [sys.executable, "-m", "gguf_mcp", "doctor"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().startswith("ok   configuration: ")
        process.stdout.close()
        go.set()
        assert process.wait(timeout=60) == 141  # what a shell shows for a program stopped by SIGPIPE
        assert process.stderr.read() == ""
