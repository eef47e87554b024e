"""/healthz and /readyz: liveness without any upstream call, readiness per deployment, cached."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from gguf_mcp.http import PROBE_TIMEOUT_S, READY_TTL_S
from tests.support.bridge import base_env, free_port, gguf_mcp_argv, http_server, serving
from tests.support.gateway import ACCOUNT_KEY, Fault, Gateway

WRONG_KEY = "sk-canary-wrong-readiness-8c2e41"


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=PROBE_TIMEOUT_S + 10)


def models_requests(gateway: Gateway, deployment: str) -> int:
    return sum(1 for r in gateway.requests_for(deployment) if r.path == "/v1/models")


def test_ready_when_every_deployment_answers_with_its_key(gateway: Gateway, tmp_path: Path) -> None:
    with http_server(gateway, tmp_path, deployments=["alpha", "beta"]) as server:
        response = get(f"{server.root}/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "deployments": {"alpha": "ok", "beta": "ok"}}
    assert response.headers["cache-control"] == "no-store"
    for name in ("alpha", "beta"):
        (request,) = gateway.requests_for(name)
        assert (request.method, request.path, request.auth_via) == ("GET", "/v1/models", "bearer")


def test_not_ready_lists_each_deployment_with_a_short_reason_and_no_secret(gateway: Gateway, tmp_path: Path) -> None:
    for name in ("good", "badkey", "gone", "starting", "slow"):
        gateway.add_canned_deployment(name)
    gateway.set_unknown("gone")
    gateway.fail_next("starting", 503, count=5)
    gateway.inject("slow", Fault.delay_first_byte(PROBE_TIMEOUT_S + 5))
    tables = {name: f'base_url = "{gateway.base_url_for(name)}"' for name in ("good", "gone", "starting", "slow")}
    tables["badkey"] = f'base_url = "{gateway.base_url_for("badkey")}"\napi_key_env = "OTHER_KEY"'
    tables["down"] = f'base_url = "http://127.0.0.1:{free_port()}"'
    config = tmp_path / "d.toml"
    config.write_text("".join(f"[deployments.{name}]\n{table}\n" for name, table in tables.items()))
    env = base_env() | {"GGUF_MCP_CONFIG": str(config), "MODELSLAB_API_KEY": ACCOUNT_KEY, "OTHER_KEY": WRONG_KEY}
    port = free_port()
    with serving(gguf_mcp_argv(port), port, env, tmp_path / "stderr") as server:
        started = time.monotonic()
        response = get(f"{server.root}/readyz")
        took = time.monotonic() - started
    assert response.status_code == 503
    assert response.json() == {
        "status": "not ready",
        "deployments": {
            "good": "ok",
            "gone": "not found",
            "starting": "not ready",
            "slow": "timed out",
            "badkey": "key rejected",
            "down": "unreachable",
        },
    }
    assert took < PROBE_TIMEOUT_S + 3, "probes run concurrently, each bounded"
    assert models_requests(gateway, "starting") == 1, "a probe is never retried"
    for leak in (ACCOUNT_KEY, WRONG_KEY, "Invalid API key", "Deployment not found", "127.0.0.1", "/api/gguf"):
        assert leak not in response.text
    log = server.stderr()
    assert "Deployment 'badkey' is not ready (key rejected): " in log
    assert "Deployment 'good'" not in log
    assert WRONG_KEY not in log
    assert ACCOUNT_KEY not in log


def test_a_probe_storm_costs_one_upstream_round_and_answers_refresh_after_the_ttl(
    gateway: Gateway, tmp_path: Path
) -> None:
    with http_server(gateway, tmp_path, deployments=["alpha", "beta"]) as server:
        gateway.fail_next("alpha", 503, count=1)  # not ready at first, then fine
        url = f"{server.root}/readyz"
        checked = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            storm = list(pool.map(get, [url] * 48))
        assert {(r.status_code, r.json()["deployments"]["alpha"]) for r in storm} == {(503, "not ready")}
        assert (models_requests(gateway, "alpha"), models_requests(gateway, "beta")) == (1, 1)

        deadline = checked + READY_TTL_S + 10
        while (response := get(url)).status_code != 200:
            assert time.monotonic() < deadline, "readiness never refreshed"
            time.sleep(0.2)  # polling a cache's expiry: there is no event to wait on
        refreshed = time.monotonic()
    assert refreshed - checked >= READY_TTL_S - 0.5
    assert response.json()["deployments"] == {"alpha": "ok", "beta": "ok"}
    assert (models_requests(gateway, "alpha"), models_requests(gateway, "beta")) == (2, 2)
    assert "Deployment 'alpha' is ready again" in server.stderr()


def test_healthz_never_calls_a_deployment(gateway: Gateway, tmp_path: Path) -> None:
    with http_server(gateway, tmp_path) as server:
        gateway.set_unknown("alpha")
        answers = [get(f"{server.root}/healthz") for _ in range(20)]
    assert {(r.status_code, r.text) for r in answers} == {(200, '{"status":"ok"}')}
    assert gateway.requests == []
