"""The llama.cpp test upstream itself: what the other tests may rely on.

Runs against whichever server kind ``tests.support.llama`` picks (xllamacpp by default, the
real binary when ``$GGUF_MCP_TEST_LLAMA_SERVER`` is set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.llama import (
    LLAMA_KEY,
    MODEL_ALIAS,
    LlamaServer,
    LlamaServerError,
    running_llama_server,
)
from tests.support.tiny_model import N_CTX, N_EMBD

pytestmark = pytest.mark.timeout(60)

HELLO = [{"role": "user", "content": "Hello there"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def post(server: LlamaServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + path, json=body, headers=server.auth_headers, timeout=30.0)


def test_models_reports_the_alias_and_the_context_size(
    llama_server: LlamaServer,
) -> None:
    response = httpx.get(f"{llama_server.v1_url}/models", headers=llama_server.auth_headers)

    assert response.status_code == 200
    (model,) = response.json()["data"]
    assert model["id"] == MODEL_ALIAS == llama_server.model_id
    assert model["meta"]["n_ctx"] == N_CTX == llama_server.n_ctx


def test_chat_completion_runs_to_max_tokens(llama_server: LlamaServer) -> None:
    response = post(llama_server, "/v1/chat/completions", {"messages": HELLO, "max_tokens": 4})

    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 4
    assert body["model"] == MODEL_ALIAS


def test_usage_is_stable_across_repeated_prompts(llama_server: LlamaServer) -> None:
    """--no-cache-prompt: a repeated prompt is counted in full, never as cached."""
    usages = [
        post(llama_server, "/v1/chat/completions", {"messages": HELLO, "max_tokens": 2}).json()["usage"]
        for _ in range(2)
    ]

    assert usages[0]["prompt_tokens"] == usages[1]["prompt_tokens"]
    assert usages[1]["prompt_tokens_details"]["cached_tokens"] == 0


def test_messages_accepts_the_key_in_x_api_key(llama_server: LlamaServer) -> None:
    response = httpx.post(
        f"{llama_server.v1_url}/messages",
        json={"model": "any", "max_tokens": 4, "messages": HELLO},
        headers={"x-api-key": LLAMA_KEY, "anthropic-version": "2023-06-01"},
        timeout=30.0,
    )

    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "message"
    assert body["stop_reason"] == "max_tokens"
    assert body["usage"]["output_tokens"] == 4


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer wrong-key"}, {"x-api-key": "wrong-key"}, {}],
    ids=["wrong-bearer", "wrong-x-api-key", "no-key"],
)
def test_requests_without_the_right_key_get_401(llama_server: LlamaServer, headers: dict[str, str]) -> None:
    response = httpx.get(f"{llama_server.v1_url}/models", headers=headers)

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_embeddings_have_the_model_width(llama_server: LlamaServer) -> None:
    response = post(llama_server, "/v1/embeddings", {"model": "any", "input": ["hello", "world"]})

    assert response.status_code == 200
    vectors = [item["embedding"] for item in response.json()["data"]]
    assert [len(v) for v in vectors] == [N_EMBD, N_EMBD]


def test_slots_and_metrics_are_exposed(llama_server: LlamaServer) -> None:
    assert len(llama_server.slots()) == 4
    assert llama_server.wait_until_idle()
    assert "llamacpp:prompt_tokens_total" in llama_server.metrics_text()


def test_tool_template_renders_tools_into_the_prompt(
    llama_tool_server: LlamaServer,
) -> None:
    def prompt_tokens(**extra: Any) -> int:
        body = {"messages": HELLO, "max_tokens": 1, **extra}
        response = post(llama_tool_server, "/v1/chat/completions", body)
        assert response.status_code == 200, response.text
        return int(response.json()["usage"]["prompt_tokens"])

    assert prompt_tokens(tools=[WEATHER_TOOL]) > prompt_tokens()


def test_chatml_template_ignores_tools(llama_server: LlamaServer) -> None:
    """Why tool tests need llama_tool_server: plain ChatML never shows tools to the model."""
    with_tools, without = (
        post(
            llama_server,
            "/v1/chat/completions",
            {"messages": HELLO, "max_tokens": 1, **extra},
        ).json()["usage"]["prompt_tokens"]
        for extra in ({"tools": [WEATHER_TOOL]}, {})
    )

    assert with_tools == without


def test_server_without_embeddings_stops_and_frees_its_port(
    tiny_model_path: Path,
) -> None:
    with running_llama_server(tiny_model_path, "another-key", embeddings=False) as server:
        response = post(server, "/v1/embeddings", {"input": "hello"})
        assert response.status_code == 501
        url = server.url

    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health")


def test_start_up_failure_reports_the_server_log(tmp_path: Path) -> None:
    not_a_model = tmp_path / "broken.gguf"
    not_a_model.write_bytes(b"this is not a GGUF file")

    with (
        pytest.raises(LlamaServerError, match=r"(?s)start-up.*--- last \d+ lines"),
        running_llama_server(not_a_model, "k", log_path=tmp_path / "server.log"),
    ):
        pass


def test_a_reused_log_file_does_not_confuse_start_up(tiny_model_path: Path, tmp_path: Path) -> None:
    """The port is read from the log, so a previous run's lines must not be mistaken for ours."""
    log_path = tmp_path / "server.log"
    with running_llama_server(tiny_model_path, "k", embeddings=False, log_path=log_path) as first:
        assert httpx.get(f"{first.url}/health").status_code == 200

    with running_llama_server(tiny_model_path, "k", embeddings=False, log_path=log_path) as second:
        assert httpx.get(f"{second.url}/health").status_code == 200
    assert log_path.read_text().count("listening on") == 1
