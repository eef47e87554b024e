"""Streamable HTTP safe to expose: the client token, Host and Origin checks, what is open, limits.

One gguf-mcp with a client token and a reverse proxy's host and origin allowed serves most
tests; raw httpx requests check statuses and headers, the official client checks real use.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import MCPError

from tests.support import netns
from tests.support.bridge import (
    INITIALIZE,
    MCP_HEADERS,
    ServerProcess,
    base_env,
    connect_http,
    free_port,
    gguf_mcp_argv,
    http_server,
    uvicorn_workers_argv,
)
from tests.support.gateway import ACCOUNT_KEY, Gateway, running_gateway

TOKEN = "tok-canary-client-5e1d7a90c3b24f68"
PROXY_HOST = "mcp.example.com"
APP_ORIGIN = "https://app.example.com"
USER = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def gateway_module() -> Iterator[Gateway]:
    with running_gateway() as gw:
        yield gw


@pytest.fixture(scope="module")
def secured(gateway_module: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """gguf-mcp on loopback with a client token, behind a 'proxy' at mcp.example.com."""
    workdir = tmp_path_factory.mktemp("secured")
    settings = {
        "GGUF_MCP_AUTH_TOKEN": TOKEN,
        "GGUF_MCP_ALLOWED_HOSTS": PROXY_HOST,
        "GGUF_MCP_ALLOWED_ORIGINS": APP_ORIGIN,
    }
    with http_server(gateway_module, workdir, settings, deployments=["alpha", "beta"]) as server:
        yield server
        assert TOKEN not in server.stderr()
        assert ACCOUNT_KEY not in server.stderr()


def post_initialize(server: ServerProcess, **headers: str) -> httpx.Response:
    response = httpx.post(server.url, json=INITIALIZE, headers=MCP_HEADERS | headers, timeout=10)
    for secret in (TOKEN, ACCOUNT_KEY):
        assert secret not in response.text
        assert all(secret not in value for value in response.headers.values())
    return response


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# --- The client token ------------------------------------------------------------------------------


def test_a_request_without_the_token_gets_401_with_a_bearer_challenge(secured: ServerProcess) -> None:
    response = post_initialize(secured)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    assert response.json()["error"] == "invalid_token"


def test_the_401_body_says_which_header_to_send(secured: ServerProcess) -> None:
    response = post_initialize(secured)
    assert response.status_code == 401
    assert "Authorization: Bearer <GGUF_MCP_AUTH_TOKEN>" in response.json()["error_description"]


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT", "OPTIONS", "HEAD"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token"], ids=["no-token", "wrong-token"])
def test_every_method_on_the_mcp_endpoint_checks_the_token_first(
    secured: ServerProcess, method: str, authorization: str | None
) -> None:
    """A client falling back to the old SSE transport (GET) must see 401, not 405 (mcp-use does)."""
    headers = {"accept": "text/event-stream"} | ({"authorization": authorization} if authorization else {})
    response = httpx.request(method, secured.url, headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")


@pytest.mark.parametrize(
    "authorization",
    ["Bearer wrong-token", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, "Bearer"],
    ids=["wrong", "longer", "prefix", "basic-scheme", "no-scheme", "scheme-only"],
)
def test_any_other_credential_gets_401(secured: ServerProcess, authorization: str) -> None:
    assert post_initialize(secured, authorization=authorization).status_code == 401


def test_the_token_is_accepted_whatever_the_scheme_case(secured: ServerProcess) -> None:
    assert post_initialize(secured, authorization=f"bearer {TOKEN}").status_code == 200


async def test_with_the_token_the_tools_work_and_the_token_never_goes_upstream(
    secured: ServerProcess, gateway_module: Gateway
) -> None:
    gateway_module.clear()
    async with connect_http(secured.url, TOKEN) as client:
        results = [
            await client.call_tool("list_models", {}),
            await client.call_tool("chat", {"messages": USER, "max_tokens": 2, "deployment": "alpha"}),
            await client.call_tool("messages", {"messages": USER, "max_tokens": 2, "deployment": "beta"}),
        ]
    assert not any(r.is_error for r in results)
    for result in results:
        assert ACCOUNT_KEY not in json.dumps(result.model_dump(mode="json"))
    upstream = gateway_module.requests
    assert {(r.deployment_id, r.path) for r in upstream} >= {
        ("alpha", "/v1/chat/completions"),
        ("beta", "/v1/messages"),
    }
    for request in upstream:
        assert request.auth_via in ("bearer", "x-api-key")  # the deployment key, as configured
        assert all(TOKEN not in value for value in request.headers.values())
        assert TOKEN.encode() not in request.body


async def test_with_a_wrong_token_the_official_client_gets_nothing_through(
    secured: ServerProcess, gateway_module: Gateway
) -> None:
    gateway_module.clear()
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    # The client fails its opening request with an MCPError, which its task groups wrap.
    with pytest.RaisesGroup(pytest.RaisesExc(MCPError), flatten_subgroups=True):
        async with connect_http(secured.url, "wrong-token", on_response=record) as client:
            await client.call_tool("chat", {"messages": USER, "max_tokens": 2})
    assert statuses and set(statuses) == {401}  # every request the client sent
    assert gateway_module.requests == []


# --- Health endpoints ------------------------------------------------------------------------------


def test_healthz_and_readyz_answer_without_the_token(secured: ServerProcess) -> None:
    health = httpx.get(f"{secured.root}/healthz", timeout=10)
    ready = httpx.get(f"{secured.root}/readyz", timeout=10)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "deployments": {"alpha": "ok", "beta": "ok"}})
    for response in (health, ready):
        assert TOKEN not in response.text
        assert ACCOUNT_KEY not in response.text


@pytest.mark.parametrize("host", ["10.1.2.3:8000", "10.1.2.3", "[fd00::7]:8000"])
def test_health_endpoints_accept_a_probe_addressing_the_server_by_ip(secured: ServerProcess, host: str) -> None:
    for path in ("/healthz", "/readyz"):
        assert httpx.get(f"{secured.root}{path}", headers={"host": host}, timeout=10).status_code == 200


def test_health_endpoints_refuse_a_foreign_host_name(secured: ServerProcess) -> None:
    for path in ("/healthz", "/readyz"):
        response = httpx.get(f"{secured.root}{path}", headers={"host": "rebind.evil.example"}, timeout=10)
        assert response.status_code == 421


# --- Host and Origin -------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, TOKEN], ids=["anonymous", "with-token"])
def test_a_foreign_origin_gets_403(secured: ServerProcess, token: str | None) -> None:
    auth = bearer(token) if token else {}
    assert post_initialize(secured, origin="https://evil.example", **auth).status_code == 403
    assert post_initialize(secured, origin="http://localhost.evil.example", **auth).status_code == 403


@pytest.mark.parametrize("token", [None, TOKEN], ids=["anonymous", "with-token"])
def test_a_foreign_host_gets_421(secured: ServerProcess, token: str | None) -> None:
    auth = bearer(token) if token else {}
    assert post_initialize(secured, host="evil.example", **auth).status_code == 421
    assert post_initialize(secured, host=f"{PROXY_HOST}.evil.example", **auth).status_code == 421


@pytest.mark.parametrize("host", ["10.1.2.3:8000", "10.1.2.3", "[fd00::7]:8000"])
def test_the_mcp_endpoint_refuses_a_bare_ip_host_that_only_probes_may_use(secured: ServerProcess, host: str) -> None:
    """Host is checked once, by us: the SDK's own check is off, so letting IP addresses through here shows."""
    assert post_initialize(secured, host=host, **bearer()).status_code == 421


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:80@evil.example", "localhost:evil", "localhost:", "localhost:99999", f"{PROXY_HOST}:443/x", "local"],
)
@pytest.mark.parametrize("path", ["/mcp", "/healthz"])
def test_a_host_that_only_starts_like_an_allowed_one_gets_421(secured: ServerProcess, host: str, path: str) -> None:
    if path == "/mcp":
        response = post_initialize(secured, host=host, **bearer())
    else:
        response = httpx.get(f"{secured.root}{path}", headers={"host": host}, timeout=10)
    assert response.status_code == 421


@pytest.mark.parametrize("origin", ["http://localhost:evil", "http://127.0.0.1:80@evil.example", "http://localhost:"])
def test_an_origin_that_only_starts_like_an_allowed_one_gets_403(secured: ServerProcess, origin: str) -> None:
    assert post_initialize(secured, origin=origin, **bearer()).status_code == 403


@pytest.mark.parametrize("host", ["MCP.EXAMPLE.COM", "Mcp.Example.Com:443", "LOCALHOST"])
def test_host_names_match_whatever_their_case(secured: ServerProcess, host: str) -> None:
    """DNS names are case-insensitive; the SDK's own check after ours must agree."""
    assert post_initialize(secured, host=host, origin=APP_ORIGIN.upper(), **bearer()).status_code == 200


def test_the_proxy_host_and_origin_are_accepted(secured: ServerProcess) -> None:
    assert post_initialize(secured, host=PROXY_HOST, origin=APP_ORIGIN, **bearer()).status_code == 200
    assert post_initialize(secured, host=f"{PROXY_HOST}:443", **bearer()).status_code == 200


def test_loopback_origins_are_accepted_and_no_origin_passes(secured: ServerProcess) -> None:
    assert post_initialize(secured, origin=f"http://127.0.0.1:{secured.port}", **bearer()).status_code == 200
    assert post_initialize(secured, origin="http://localhost:3000", **bearer()).status_code == 200
    assert post_initialize(secured, **bearer()).status_code == 200


# --- The endpoint's rules and limits -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "HEAD"])
def test_with_the_token_a_method_the_endpoint_does_not_serve_is_405(secured: ServerProcess, method: str) -> None:
    """GET included: no standalone event stream, so no stream outlives its call."""
    response = httpx.request(method, secured.url, headers={"accept": "text/event-stream"} | bearer(), timeout=10)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST, DELETE"


def test_a_body_over_4_mib_gets_413(secured: ServerProcess) -> None:
    huge: dict[str, Any] = {**INITIALIZE, "params": {**INITIALIZE["params"], "padding": "x" * (4 * 1024 * 1024)}}
    response = httpx.post(secured.url, json=huge, headers=MCP_HEADERS | bearer(), timeout=30)
    assert response.status_code == 413
    just_under: dict[str, Any] = {**INITIALIZE, "params": {**INITIALIZE["params"], "padding": "x" * 1_000_000}}
    assert httpx.post(secured.url, json=just_under, headers=MCP_HEADERS | bearer(), timeout=30).status_code == 200


def test_every_response_carries_a_request_id(secured: ServerProcess) -> None:
    ids = {post_initialize(secured, **bearer()).headers["x-request-id"] for _ in range(3)}
    ids.add(httpx.get(f"{secured.root}/healthz", timeout=10).headers["x-request-id"])
    assert len(ids) == 4


# --- Behind a path prefix (uvicorn --root-path): the checks see the path the router serves ----------

ROOT_PATH = "/gguf"


def uvicorn_under_root_path(port: int) -> list[str]:
    return uvicorn_workers_argv(port, 1, "--root-path", ROOT_PATH)


@pytest.fixture(scope="module")
def rooted(gateway_module: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The README's uvicorn command with `--root-path` (behind a proxy that strips the prefix) and a token."""
    workdir, settings = tmp_path_factory.mktemp("rooted"), {"GGUF_MCP_AUTH_TOKEN": TOKEN}
    with http_server(gateway_module, workdir, settings, launcher=uvicorn_under_root_path) as server:
        yield server


def test_under_a_root_path_the_endpoint_serves_a_client_with_the_token(rooted: ServerProcess) -> None:
    assert post_initialize(rooted, **bearer()).status_code == 200
    assert post_initialize(rooted).status_code == 401


def test_under_a_root_path_get_with_the_token_is_still_405(rooted: ServerProcess) -> None:
    response = httpx.get(rooted.url, headers={"accept": "text/event-stream"} | bearer(), timeout=10)
    assert (response.status_code, response.headers.get("allow")) == (405, "POST, DELETE")


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT"])
def test_under_a_root_path_every_method_without_the_token_is_401(rooted: ServerProcess, method: str) -> None:
    assert httpx.request(method, rooted.url, headers={"accept": "text/event-stream"}, timeout=10).status_code == 401


def test_under_a_root_path_probes_still_accept_an_ip_host(rooted: ServerProcess) -> None:
    assert httpx.get(f"{rooted.root}/healthz", headers={"host": "10.1.2.3:8000"}, timeout=10).status_code == 200
    assert post_initialize(rooted, host="10.1.2.3:8000", **bearer()).status_code == 421


# --- A server without a token must not be reachable beyond loopback -------------------------------------


def refused_start(tmp_path: Path, **settings: str) -> str:
    """Start `gguf-mcp --transport http` with `settings`; it must refuse: exit 2, one line on stderr."""
    env = base_env() | {"GGUF_BASE_URL": "http://127.0.0.1:9"} | settings
    argv = gguf_mcp_argv(free_port())
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=20, cwd=tmp_path, check=False)
    assert (out.returncode, out.stdout) == (2, ""), out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    return out.stderr


@pytest.mark.parametrize("hosts", [PROXY_HOST, f"localhost,{PROXY_HOST}:443", "10.0.0.5"])
def test_allowed_hosts_beyond_loopback_without_a_token_refuses_to_start(tmp_path: Path, hosts: str) -> None:
    """Behind a reverse proxy the bind is loopback, yet the proxy's public name lets anyone in."""
    message = refused_start(tmp_path, GGUF_MCP_ALLOWED_HOSTS=hosts)
    assert "GGUF_MCP_ALLOWED_HOSTS" in message
    assert "GGUF_MCP_AUTH_TOKEN" in message


def test_allowed_hosts_that_are_all_loopback_need_no_token(gateway: Gateway, tmp_path: Path) -> None:
    settings = {"GGUF_MCP_ALLOWED_HOSTS": "localhost:8080,127.0.0.2,[::1]:9000"}
    with http_server(gateway, tmp_path, settings) as server:
        assert post_initialize(server, host="127.0.0.2").status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_a_token_shorter_than_32_characters_refuses_to_start(tmp_path: Path, host: str) -> None:
    """Even on loopback: behind a reverse proxy the bind address says nothing about who can reach us."""
    short = "tok-canary-short-0123456789abcd"  # 31 characters
    message = refused_start(tmp_path, GGUF_MCP_AUTH_TOKEN=short, GGUF_MCP_HOST=host)
    assert short not in message
    assert "GGUF_MCP_AUTH_TOKEN" in message
    assert "32" in message
    assert "secrets.token_urlsafe" in message


def test_a_32_character_token_is_enough(gateway: Gateway, tmp_path: Path) -> None:
    token = "tok-canary-exact-0123456789abcdef"[:32]
    with http_server(gateway, tmp_path, {"GGUF_MCP_AUTH_TOKEN": token}) as server:
        assert post_initialize(server, **bearer(token)).status_code == 200


@pytest.mark.parametrize("uvicorn_flags", [[], ["--root-path", ROOT_PATH]], ids=["plain", "root-path"])
def test_without_a_token_a_request_arriving_on_a_non_loopback_address_is_refused(uvicorn_flags: list[str]) -> None:
    """Under uvicorn's CLI the app cannot see --host; it refuses what reached it from outside,
    whatever the path prefix uvicorn adds (the refusal sees the path the router matched).

    Run in a network namespace of the test's own (tests/support/netns.py), bound to a TEST-NET
    address there: no traffic to this machine's interfaces or anywhere else.
    """
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(reason)
    probe = [sys.executable, "-m", "tests.support.netns", *uvicorn_flags]
    out = subprocess.run(netns.in_namespace(probe), env=base_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["server"] == f"http://{netns.ADDRESS}:{report['server'].rsplit(':', 1)[1]}"
    status, text = report["spoofed"]
    assert status == 403, text
    assert "beyond loopback without a token" in text
    assert report["health"] == 200
    assert "set GGUF_MCP_AUTH_TOKEN" in report["stderr"]
    assert report["upstream_requests"] == 0
