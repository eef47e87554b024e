"""`GET /metrics` as a scraper reads it: after real calls to llama.cpp's server (behind the GGUF Cloud
gateway), parsed with prometheus_client's own parser; who may read it; several uvicorn workers
summed; and an audit trail that cannot be opened stopping the start.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio
import httpx
import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from starlette.testclient import TestClient

from gguf_mcp.config import load_settings
from gguf_mcp.http import build_app
from gguf_mcp.state import open_state
from tests.support.bridge import connect_http, http_server, uvicorn_workers_argv
from tests.support.calls import Progress
from tests.support.cli import run_cli
from tests.support.fairshare import (
    PROMPT_CANARY,
    Team,
    deployment_toml,
    fair_server,
    prompt,
    samples,
    scrape,
    value,
)
from tests.support.gateway import ACCOUNT_KEY, Gateway
from tests.support.llama import LlamaServer
from tests.support.readme import code_after

pytestmark = pytest.mark.anyio


async def test_the_metrics_count_each_call_and_the_tokens_the_deployment_reported(
    gw: Gateway, llama_server: LlamaServer, tmp_path: Path
) -> None:
    team = Team({"a": "", "ops": "metrics = true"})
    with fair_server(tmp_path, deployment_toml(gw) + team.toml()) as server:
        async with connect_http(server.url, team.tokens["a"]) as a:
            chat = await a.call_tool("chat", {"messages": prompt("plain"), "max_tokens": 4})
            streamed = await a.call_tool(
                "messages", {"messages": prompt("streamed"), "max_tokens": 5}, progress_callback=Progress()
            )
            embedded = await a.call_tool("embed", {"input": f"embed {PROMPT_CANARY}"})
            async with anyio.create_task_group() as tg:  # two at once: the slot count is asked for
                for n in range(2):
                    tg.start_soon(a.call_tool, "complete", {"prompt": f"c{n} {PROMPT_CANARY}", "max_tokens": 3})
        exposition = scrape(server, team.tokens["ops"])
    assert exposition.status_code == 200
    assert exposition.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(exposition.text)
    usage = [(r.structured_content or {})["usage"] for r in (chat, streamed, embedded)]

    def count(metric: str, tool: str) -> float:
        return value(found, metric, deployment="dep", tool=tool, client="a", outcome="ok")

    assert [count("gguf_mcp_calls_total", tool) for tool in ("chat", "messages", "embed", "complete")] == [1, 1, 1, 2]
    assert count("gguf_mcp_prompt_tokens_total", "chat") == usage[0]["prompt_tokens"]
    assert count("gguf_mcp_completion_tokens_total", "chat") == usage[0]["completion_tokens"]
    assert count("gguf_mcp_prompt_tokens_total", "messages") == usage[1]["input_tokens"]
    assert count("gguf_mcp_completion_tokens_total", "messages") == usage[1]["output_tokens"]
    assert count("gguf_mcp_prompt_tokens_total", "embed") == usage[2]["prompt_tokens"]
    assert count("gguf_mcp_completion_tokens_total", "complete") == 6
    assert count("gguf_mcp_time_to_first_token_seconds_count", "messages") == 1  # streamed
    assert count("gguf_mcp_time_to_first_token_seconds_count", "chat") == 0  # plain: no first token seen
    assert count("gguf_mcp_call_duration_seconds_count", "complete") == 2
    assert count("gguf_mcp_queue_wait_seconds_count", "complete") == 2
    assert value(found, "gguf_mcp_calls_in_flight", deployment="dep", tool="chat", client="a") == 0
    assert value(found, "gguf_mcp_deployment_slots", deployment="dep") == 4  # llama.cpp's --parallel, from /props
    responses = {
        (dict(labels)["route"], dict(labels)["status"]): v
        for (name, labels), v in found.items()
        if name == "gguf_mcp_upstream_responses_total"
    }
    assert responses == {
        ("/v1/chat/completions", "200"): 1,
        ("/v1/messages", "200"): 1,
        ("/v1/embeddings", "200"): 1,
        ("/v1/completions", "200"): 2,
        ("/props", "200"): 1,
    }
    texts = [str((r.structured_content or {})["text"]) for r in (chat, streamed)]
    for secret in (PROMPT_CANARY, *texts, ACCOUNT_KEY, llama_server.api_key, *team.tokens.values()):
        assert secret not in exposition.text


async def test_upstream_failures_and_retries_are_counted_by_status_and_reason(
    gw: Gateway, llama_server: LlamaServer, tmp_path: Path
) -> None:
    team = Team({"ops": "metrics = true"})
    gw.fail_next("dep", 503)  # not ready: retried
    with fair_server(tmp_path, deployment_toml(gw) + team.toml(), {"GGUF_MCP_MAX_RETRIES": "1"}) as server:
        async with connect_http(server.url, team.tokens["ops"]) as ops:
            result = await ops.call_tool("chat", {"messages": prompt("retried"), "max_tokens": 2})
        found = samples(scrape(server, team.tokens["ops"]).text)
    assert not result.is_error
    route = "/v1/chat/completions"
    assert value(found, "gguf_mcp_upstream_responses_total", deployment="dep", route=route, status="503") == 1
    assert value(found, "gguf_mcp_upstream_responses_total", deployment="dep", route=route, status="200") == 1
    assert value(found, "gguf_mcp_upstream_retries_total", deployment="dep", route=route, reason="not ready") == 1


def test_only_a_client_with_the_metrics_scope_reads_them(
    gw: Gateway, llama_server: LlamaServer, tmp_path: Path
) -> None:
    team = Team({"a": "", "ops": "metrics = true"})
    with fair_server(tmp_path, deployment_toml(gw) + team.toml()) as server:
        anonymous, refused, allowed = (
            scrape(server),
            scrape(server, team.tokens["a"]),
            scrape(server, team.tokens["ops"]),
        )
        openmetrics = scrape(server, team.tokens["ops"], accept="application/openmetrics-text; version=1.0.0")
        bare_ip = httpx.get(f"{server.root}/metrics", headers={"host": "10.0.0.7:9090", **bearer(team, "ops")})
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer ")
    assert refused.status_code == 403 and 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert "gguf_mcp_calls" not in anonymous.text + refused.text
    assert allowed.status_code == 200 and "# TYPE gguf_mcp_calls_total counter" in allowed.text
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    families = openmetrics_families(openmetrics.text)  # type: ignore[no-untyped-call]
    assert {f.name for f in families} >= {"gguf_mcp_calls", "gguf_mcp_queue_length"}
    assert bare_ip.status_code == 200  # Prometheus scrapes a pod by its address


def bearer(team: Team, name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {team.tokens[name]}"}


def test_without_client_credentials_metrics_are_served_on_loopback_only(gateway: Gateway, tmp_path: Path) -> None:
    with http_server(gateway, tmp_path) as server:
        on_loopback = httpx.get(f"{server.root}/metrics")
    settings = load_settings({"transport": "http"}, {"GGUF_BASE_URL": "http://127.0.0.1:9"})
    _, state = open_state(settings, metrics=True)
    with TestClient(build_app(state), base_url="http://10.0.0.7:8000") as elsewhere:  # a non-loopback address
        beyond = elsewhere.get("/metrics")
    assert on_loopback.status_code == 200 and "gguf_mcp_calls_total" in on_loopback.text
    assert beyond.status_code == 403 and "loopback" in beyond.text


async def test_two_uvicorn_workers_answer_with_the_sum_of_both(gateway: Gateway, tmp_path: Path) -> None:
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    settings = {"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    calls = 12
    with http_server(gateway, tmp_path, settings, launcher=lambda port: uvicorn_workers_argv(port, 2)) as server:
        for n in range(calls):  # a session (a connection) each: the kernel spreads them over the workers
            async with connect_http(server.url) as client:
                result = await client.call_tool("chat", {"messages": prompt(f"w{n}"), "max_tokens": 2})
                assert not result.is_error
        scrapes = [await calls_counted(server.root) for _ in range(6)]  # a connection each: either worker
    writers = {path.stem.rsplit("_", 1)[-1] for path in multiproc.glob("counter_*.db")}
    assert len(writers) == 2, f"one worker served every call ({writers}): the sum was not exercised"
    assert scrapes == [calls] * 6


async def calls_counted(root: str) -> float:
    async with httpx.AsyncClient() as http:
        found = samples((await http.get(f"{root}/metrics")).text)
    return value(found, "gguf_mcp_calls_total", deployment="alpha", tool="chat", client="default", outcome="ok")


def test_an_audit_trail_that_cannot_be_opened_stops_the_start_in_one_line(gateway: Gateway, tmp_path: Path) -> None:
    unopenable = str(tmp_path / ("x" * 300))  # a name longer than any file system allows
    env = {"GGUF_BASE_URL": "http://127.0.0.1:9", "GGUF_MCP_AUDIT_LOG": unopenable}
    cli = run_cli(env=env)
    assert cli.returncode == 2
    assert cli.stderr.count("\n") == 1 and "GGUF_MCP_AUDIT_LOG=" in cli.stderr
    assert "cannot be opened for appending (File name too long)" in cli.stderr

    def uvicorn(port: int) -> list[str]:
        return uvicorn_workers_argv(port, 1)

    with (
        pytest.raises(RuntimeError, match="exited with 3"),  # uvicorn's "failed to start": no restarts
        http_server(gateway, tmp_path, {"GGUF_MCP_AUDIT_LOG": unopenable}, launcher=uvicorn),
    ):
        pass
    assert "cannot be opened for appending" in (tmp_path / "stderr").read_text()


def test_a_metrics_directory_that_is_not_there_stops_the_start_in_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "prometheus")  # several workers share it: the operator creates it
    env = {"GGUF_BASE_URL": "http://127.0.0.1:9", "PROMETHEUS_MULTIPROC_DIR": missing}
    cli = run_cli("--transport", "http", "--port", "0", env=env)
    assert cli.returncode == 2
    assert cli.stderr.count("\n") == 1 and f"PROMETHEUS_MULTIPROC_DIR={missing} is not a directory" in cli.stderr


# --- The README's commands, as written ----------------------------------------------------------------

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)  # what Prometheus 3 asks for by default (scrape_protocols)


def test_the_readmes_curl_and_scrape_configuration_read_the_metrics(
    gw: Gateway, llama_server: LlamaServer, tmp_path: Path
) -> None:
    team = Team({"ops": "metrics = true"})
    _, curl = code_after("Read it by hand:")
    _, scrape_config = code_after("have Prometheus scrape it")
    job = yaml.safe_load(scrape_config)["scrape_configs"][0]
    token_file = tmp_path / "gguf-mcp.token"
    token_file.write_text(team.tokens["ops"] + "\n")
    with fair_server(tmp_path, deployment_toml(gw) + team.toml()) as server:
        anyio.run(one_chat, server.url, team.tokens["ops"])
        by_hand = subprocess.run(
            ["/bin/bash", "-c", curl.replace("http://127.0.0.1:8000", server.root)],
            env={"PATH": "/usr/bin:/bin", "GGUF_MCP_METRICS_TOKEN": team.tokens["ops"]},
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        auth = job["authorization"]
        assert auth["credentials_file"] == "/etc/prometheus/gguf-mcp.token"
        (target,) = job["static_configs"][0]["targets"]
        assert target == "127.0.0.1:8000"
        scraped = httpx.get(
            f"{job.get('scheme', 'http')}://127.0.0.1:{server.port}{job['metrics_path']}",
            headers={"authorization": f"{auth['type']} {token_file.read_text().strip()}", "accept": PROMETHEUS_ACCEPT},
        )
    assert by_hand.returncode == 0, by_hand.stderr
    assert by_hand.stdout == 'gguf_mcp_calls_total{client="ops",deployment="dep",outcome="ok",tool="chat"} 1.0\n'
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name for f in openmetrics_families(scraped.text)}  # type: ignore[no-untyped-call]
    assert "gguf_mcp_calls" in families


async def one_chat(url: str, token: str) -> None:
    async with connect_http(url, token) as client:
        assert not (await client.call_tool("chat", {"messages": prompt("one"), "max_tokens": 2})).is_error


def test_the_readmes_metrics_directory_commands_make_an_empty_directory(tmp_path: Path) -> None:
    _, commands = code_after("the environment uvicorn starts with; `/metrics`")
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"stale")  # a previous run's
    script = commands.replace("/var/lib/gguf-mcp/metrics", str(directory)) + 'echo "$PROMETHEUS_MULTIPROC_DIR"\n'
    out = subprocess.run(["/bin/bash", "-c", script], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == str(directory)
    assert directory.is_dir() and not any(directory.iterdir())
