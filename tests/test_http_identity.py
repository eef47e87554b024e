"""Identities over HTTP, as users run gguf-mcp: a subprocess, a real authorization server
(oidc-provider), named clients, and the official Python and TypeScript clients.

One server (`served`) holds every kind of credential at once: GGUF_MCP_AUTH_TOKEN (the client
`default`), named clients with their own tokens and policies, and OAuth (JWTs of `oidc_server`
for its public URL), its deployments canned on the gateway. Every refusal is also checked
against what reached the deployments (the gateway's request log): nothing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata
from pydantic import AnyUrl

from gguf_mcp.clients import hash_token
from tests.support.bridge import (
    INITIALIZE,
    MCP_HEADERS,
    ROOT,
    ServerProcess,
    base_env,
    connect_http,
    free_port,
    gguf_mcp_argv,
    http_server,
    serving,
    uvicorn_workers_argv,
)
from tests.support.calls import text_of
from tests.support.gateway import ACCOUNT_KEY, Gateway, RecordedRequest, running_gateway
from tests.support.node_tools import NodeTools, ensure_npm_packages
from tests.support.oidc import (
    AuthorizationServer,
    MemoryStorage,
    claims_of,
    hs256_with_public_key,
    rsa_key,
    start_oidc_server,
    tampered,
    unsigned,
)
from tests.support.readme import code_after

STATIC = "static-canary-token-6d2f0b9a4c8e13570aa1"
"""GGUF_MCP_AUTH_TOKEN: the client `default`, every tool and scope."""
ALICE = "alice-canary-token-0b7e2a4f68a1d33f9d1c"
BOB = "bob-canary-token-5b4a39281706f58e7d6c"
DEPLOYMENTS = ("alpha", "beta", "gamma")
CLIENTS = f"""
[clients.alice]
token_sha256 = "{hash_token(ALICE)}"
deployments = ["alpha"]
tools = ["list_models", "chat"]

[clients.bob]
token_sha256 = "{hash_token(BOB)}"
scopes = ["gguf:embed"]
deployments = ["beta"]

[clients.ci]
oauth_client_id = "machine"
deployments = ["alpha", "gamma"]
"""
USER = [{"role": "user", "content": "Hello there"}]
EVERY_TOOL: dict[str, dict[str, Any]] = {
    "list_models": {},
    "chat": {"messages": USER, "max_tokens": 8},
    "messages": {"messages": USER, "max_tokens": 8},
    "complete": {"prompt": "Once upon a time", "max_tokens": 8},
    "embed": {"input": "hello"},
}
TS_CLIENT = {"@modelcontextprotocol/client": "2.4.0"}
"""The TypeScript SDK v2 client, newest on npm at the suite's cut-off (node_tools.NPM_BEFORE)."""


def write_config(path: Path, gateway: Gateway, clients: str) -> Path:
    """A GGUF_MCP_CONFIG file: DEPLOYMENTS (canned on `gateway`, alpha the default) and `clients`."""
    tables = "".join(f'[deployments.{n}]\nbase_url = "{gateway.base_url_for(n)}"\n\n' for n in DEPLOYMENTS)
    path.write_text(f'default = "alpha"\n\n{tables}{clients}')
    return path


def public(port: int) -> list[str]:
    """gguf-mcp on `port`, knowing its own public URL (the audience its tokens must name)."""
    return gguf_mcp_argv(port, "--public-url", f"http://127.0.0.1:{port}/mcp")


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    with running_gateway() as gateway:
        yield gateway


@pytest.fixture(scope="module")
def served(
    oidc_server: AuthorizationServer, gw: Gateway, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """gguf-mcp with every kind of credential, logging JSON at info level."""
    workdir = tmp_path_factory.mktemp("identity")
    settings = {
        "GGUF_MCP_CONFIG": str(write_config(workdir / "gguf-mcp.toml", gw, CLIENTS)),
        "GGUF_MCP_AUTH_TOKEN": STATIC,
        "GGUF_MCP_OAUTH_ISSUER": oidc_server.issuer,
        "GGUF_MCP_LOG_FORMAT": "json",
        "GGUF_MCP_LOG_LEVEL": "info",
    }
    with http_server(gw, workdir, settings, deployments=DEPLOYMENTS, launcher=public) as server:
        yield server


class Upstream:
    """What reached the deployments since it was made."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._before = len(gateway.requests)

    def sent(self) -> list[RecordedRequest]:
        return self._gateway.requests[self._before :]

    def reached(self) -> list[str]:
        return [f"{r.method} {r.deployment_id}{r.path}" for r in self.sent()]


def log_lines(server: ServerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.stderr().splitlines() if line.startswith("{")]


# --- Discovery: the 401 and the protected resource metadata -------------------------------------------


def test_a_401_names_the_metadata_which_names_the_issuer_and_the_scopes(
    served: ServerProcess, oidc_server: AuthorizationServer
) -> None:
    refused = httpx.post(served.url, json=INITIALIZE, headers=MCP_HEADERS, timeout=10)

    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    metadata_url = f"{served.root}/.well-known/oauth-protected-resource/mcp"
    assert f'resource_metadata="{metadata_url}"' in challenge
    assert 'scope="gguf:models gguf:generate gguf:embed"' in challenge
    hint = refused.json()["error_description"]
    assert "Bearer <GGUF_MCP_AUTH_TOKEN>" in hint and "gguf-mcp token new" in hint and oidc_server.issuer in hint
    metadata = httpx.get(metadata_url, timeout=10).json()
    assert metadata["resource"] == served.url
    assert metadata["authorization_servers"] == [oidc_server.issuer]
    assert metadata["scopes_supported"] == ["gguf:models", "gguf:generate", "gguf:embed", "gguf:metrics"]
    assert metadata["bearer_methods_supported"] == ["header"]


# --- Signing in: the official clients -------------------------------------------------------------------


@asynccontextmanager
async def signed_in(
    url: str, oidc_server: AuthorizationServer, user: str, mode: str
) -> AsyncIterator[tuple[Client, MemoryStorage]]:
    """The official Python client's own OAuth flow, knowing only `url`: the 401, discovery, dynamic
    registration, authorization code with PKCE and `resource`, `user`'s consent given over HTTP."""
    redirect, callback = oidc_server.browser(user)
    metadata = OAuthClientMetadata(redirect_uris=[AnyUrl("http://127.0.0.1:9/callback")])
    storage = MemoryStorage()
    oauth = OAuthClientProvider(url, metadata, storage, redirect, callback)
    async with (
        httpx2.AsyncClient(auth=oauth, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client, storage


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_the_official_client_signs_in_knowing_only_the_url_then_uses_every_tool_and_resource(
    served: ServerProcess, oidc_server: AuthorizationServer, gw: Gateway, mode: str
) -> None:
    async with signed_in(served.url, oidc_server, "dana", mode) as (client, storage):
        tools = {tool.name for tool in (await client.list_tools()).tools}
        results = {name: await client.call_tool(name, arguments) for name, arguments in EVERY_TOOL.items()}
        deployments = await client.read_resource("gguf://deployments")
        era = client.protocol_version

    assert era == ("2025-11-25" if mode == "legacy" else "2026-07-28")
    assert tools == set(EVERY_TOOL)
    assert {name: result.is_error for name, result in results.items()} == dict.fromkeys(EVERY_TOOL, False)
    assert [d["deployment"] for d in json.loads(deployments.contents[0].text)["deployments"]] == list(DEPLOYMENTS)  # type: ignore[union-attr]
    assert storage.tokens is not None and storage.client_info is not None
    granted = claims_of(storage.tokens.access_token)
    assert (granted["aud"], granted["sub"]) == (served.url, "dana")  # RFC 8707: the resource it asked for
    assert granted["scope"].split() == ["gguf:models", "gguf:generate", "gguf:embed"]  # what the 401 said
    # An unconfigured OAuth client is its client_id, under [client_defaults], in the logs.
    named = {line.get("client") for line in log_lines(served)}
    assert storage.client_info.client_id in named


async def test_a_machine_agent_signs_in_with_client_credentials_and_gets_its_tables_limits(
    served: ServerProcess, oidc_server: AuthorizationServer, gw: Gateway
) -> None:
    token = await oidc_server.client_credentials_token(served.url)
    async with connect_http(served.url, token) as client:
        tools = (await client.list_tools()).tools
        answered = await client.call_tool("chat", {**EVERY_TOOL["chat"], "deployment": "gamma"})
        upstream = Upstream(gw)
        refused = await client.call_tool("chat", {**EVERY_TOOL["chat"], "deployment": "beta"})

    chat = next(tool for tool in tools if tool.name == "chat")
    assert chat.input_schema["properties"]["deployment"]["anyOf"][0]["enum"] == ["alpha", "gamma"]  # [clients.ci]
    assert not answered.is_error
    assert refused.is_error and "Client 'ci' may not use deployment 'beta'. Its deployments: alpha, gamma" in text_of(
        refused
    )
    assert upstream.reached() == []


def test_the_typescript_v2_client_signs_in_with_client_credentials_and_calls_a_tool(
    served: ServerProcess, oidc_server: AuthorizationServer, node_tools: NodeTools
) -> None:
    modules = ensure_npm_packages("mcp-client-v2", TS_CLIENT)
    request = {
        "url": served.url,
        "clientId": oidc_server.machine.client_id,
        "clientSecret": oidc_server.machine.client_secret,
        "issuer": oidc_server.issuer,
        "tool": "chat",
        "arguments": {**EVERY_TOOL["chat"], "deployment": "gamma"},
    }
    entry = modules / "@modelcontextprotocol" / "client" / "dist" / "index.mjs"
    script = ROOT / "tests" / "support" / "ts_identity_client.mjs"
    out = subprocess.run(
        [str(node_tools.node), str(script), str(entry), json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["version"] == TS_CLIENT["@modelcontextprotocol/client"]
    assert set(report["tools"]) == set(EVERY_TOOL)  # ci: every tool, on its deployments
    assert report["result"]["isError"] is False and report["result"]["content"][0]["text"]
    assert oidc_server.machine.client_secret not in served.stderr()


# --- Refusals at the door: nothing reaches a deployment -------------------------------------------------

Forger = Callable[[AuthorizationServer, str], str]


def _now() -> int:
    return int(time.time())


FORGED: dict[str, Forger] = {
    "expired": lambda s, url: s.mint(url, iat=_now() - 600, exp=_now() - 300),
    "not yet valid": lambda s, url: s.mint(url, nbf=_now() + 300),
    "wrong issuer": lambda s, url: s.mint(url, iss="http://127.0.0.1:1"),
    "audience of another resource": lambda s, url: s.mint("http://127.0.0.1:1/mcp"),
    "alg none": lambda s, url: unsigned({"alg": "none", "typ": "at+jwt", "kid": s.key.kid}, claims_of(s.mint(url))),
    "HS256 signed with the public key": hs256_with_public_key,
    "unknown kid": lambda s, url: s.mint(url, key=rsa_key("not-the-issuers")),
    "tampered payload": tampered,
}


@pytest.mark.parametrize("case", list(FORGED))
def test_a_forged_or_invalid_token_gets_401_and_nothing_reaches_a_deployment(
    served: ServerProcess, oidc_server: AuthorizationServer, gw: Gateway, case: str
) -> None:
    token = FORGED[case](oidc_server, served.url)
    upstream = Upstream(gw)
    headers = MCP_HEADERS | {"authorization": f"Bearer {token}"}

    initialize = httpx.post(served.url, json=INITIALIZE, headers=headers, timeout=10)
    call = httpx.post(
        served.url,
        json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_models", "arguments": {}}},
        headers=headers | {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "list_models"},
        timeout=10,
    )

    assert (initialize.status_code, call.status_code) == (401, 401)
    assert "resource_metadata=" in initialize.headers["www-authenticate"]
    assert upstream.reached() == []
    assert all(part not in served.stderr() for part in token.split(".") if len(part) > 8)


def test_a_token_without_a_gguf_scope_gets_403_insufficient_scope_naming_them(
    served: ServerProcess, oidc_server: AuthorizationServer, gw: Gateway
) -> None:
    upstream = Upstream(gw)
    headers = MCP_HEADERS | {"authorization": f"Bearer {oidc_server.mint(served.url, scope='openid profile')}"}

    refused = httpx.post(served.url, json=INITIALIZE, headers=headers, timeout=10)

    assert refused.status_code == 403
    challenge = refused.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="gguf:models gguf:generate gguf:embed gguf:metrics"' in challenge
    assert f'resource_metadata="{served.root}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert refused.json()["error"] == "insufficient_scope"
    assert upstream.reached() == []


# --- Named clients: their own tools, deployments and resources --------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_named_client_sees_and_uses_only_its_tools_and_deployments(
    served: ServerProcess, gw: Gateway, mode: str
) -> None:
    async with connect_http(served.url, ALICE, mode=mode) as alice:
        tools = {tool.name: tool for tool in (await alice.list_tools()).tools}
        listed = await alice.call_tool("list_models", {})
        resources = [str(r.uri) for r in (await alice.list_resources()).resources]
        everything = await alice.read_resource("gguf://deployments")
        upstream = Upstream(gw)
        refusals = {
            "embed": await alice.call_tool("embed", EVERY_TOOL["embed"]),
            "chat on beta": await alice.call_tool("chat", {**EVERY_TOOL["chat"], "deployment": "beta"}),
        }
        with pytest.raises(MCPError) as unreadable:
            await alice.read_resource("gguf://deployments/beta")
        reached = upstream.reached()
        answered = await alice.call_tool("chat", EVERY_TOOL["chat"])  # alpha, the default: hers

    assert set(tools) == {"list_models", "chat"}
    assert tools["chat"].input_schema["properties"]["deployment"]["anyOf"][0]["enum"] == ["alpha"]
    assert listed.structured_content is not None
    assert [d["deployment"] for d in listed.structured_content["deployments"]] == ["alpha"]
    assert resources == ["gguf://deployments", "gguf://deployments/alpha"]
    assert [d["deployment"] for d in json.loads(everything.contents[0].text)["deployments"]] == ["alpha"]  # type: ignore[union-attr]
    assert "its tools are chat, list_models" in text_of(refusals["embed"])
    assert "may not use deployment 'beta'. Its deployments: alpha" in text_of(refusals["chat on beta"])
    assert all(result.is_error for result in refusals.values())
    assert "may not use deployment 'beta'" in str(unreadable.value)
    assert reached == []
    assert not answered.is_error


async def test_a_named_clients_scopes_decide_its_tools_and_resources(served: ServerProcess, gw: Gateway) -> None:
    async with connect_http(served.url, BOB) as bob:
        tools = [tool.name for tool in (await bob.list_tools()).tools]
        resources = (await bob.list_resources()).resources
        upstream = Upstream(gw)
        chat = await bob.call_tool("chat", EVERY_TOOL["chat"])
        on_the_default = await bob.call_tool("embed", EVERY_TOOL["embed"])
        with pytest.raises(MCPError) as unreadable:
            await bob.read_resource("gguf://deployments")
        reached = upstream.reached()
        embedded = await bob.call_tool("embed", {**EVERY_TOOL["embed"], "deployment": "beta"})

    assert tools == ["embed"] and resources == []
    assert "needs the scope gguf:generate, and this client has gguf:embed" in text_of(chat)
    assert "names no deployment, and the default one ('alpha') is not one client 'bob' may use" in text_of(
        on_the_default
    )
    assert "name one of beta" in text_of(on_the_default)
    assert "needs the scope gguf:models" in str(unreadable.value)
    assert reached == []
    assert not embedded.is_error


# --- No client credential reaches a deployment; every log line names its client ---------------------------


async def test_no_client_credential_ever_reaches_a_deployment(
    served: ServerProcess, oidc_server: AuthorizationServer, gw: Gateway
) -> None:
    jwt = await oidc_server.client_credentials_token(served.url)
    upstream = Upstream(gw)
    for token, tools in ((STATIC, EVERY_TOOL), (ALICE, ("list_models", "chat")), (jwt, EVERY_TOOL)):
        async with connect_http(served.url, token) as client:
            for name in tools:
                assert not (await client.call_tool(name, EVERY_TOOL[name])).is_error, name

    sent = upstream.sent()
    assert len(sent) >= 12
    for request in sent:
        seen = json.dumps(request.headers) + request.body.decode(errors="replace") + request.query
        for credential in (STATIC, ALICE, *jwt.split(".")):
            assert credential not in seen, (request.method, request.path)
        assert request.headers.get("authorization") in (f"Bearer {ACCOUNT_KEY}", None)


async def test_every_log_line_of_a_request_names_its_client_never_a_token(
    served: ServerProcess, oidc_server: AuthorizationServer
) -> None:
    jwt = await oidc_server.client_credentials_token(served.url)
    for token, tool in ((ALICE, "chat"), (BOB, "embed"), (jwt, "chat"), (STATIC, "chat")):
        async with connect_http(served.url, token) as session:
            await session.call_tool(tool, {**EVERY_TOOL[tool], "deployment": "no-such-one"})

    lines = log_lines(served)
    refusals = [line for line in lines if "no-such-one" in line["message"]]
    assert {line["client"] for line in refusals} >= {"alice", "bob", "ci", "default"}
    # Lines of the bearer's own check come before anyone is known: its refusal, the issuer's keys fetched.
    checking = ("Access token refused", oidc_server.issuer)
    inside = [line for line in lines if "request_id" in line and not any(c in line["message"] for c in checking)]
    assert inside and all("client" in line for line in inside), [line for line in inside if "client" not in line]
    text = served.stderr()
    assert all(secret not in text for secret in (STATIC, ALICE, BOB, *jwt.split(".")))


# --- The authorization server down: 503, never an accepted token -----------------------------------------


def test_an_issuer_that_cannot_be_asked_gets_503_with_one_log_line_and_no_token_accepted(
    gw: Gateway, tmp_path: Path
) -> None:
    """Keys already fetched keep verifying while the issuer is down (tests/test_identity.py); here
    the server never got them, so no access token can be checked."""
    with start_oidc_server() as issuer:
        settings = {
            "GGUF_MCP_CONFIG": str(write_config(tmp_path / "gguf-mcp.toml", gw, "")),
            "GGUF_MCP_OAUTH_ISSUER": issuer.issuer,
        }
        with http_server(gw, tmp_path, settings, deployments=DEPLOYMENTS, launcher=public) as server:
            token = issuer.mint(server.url)
            issuer.process.terminate()
            issuer.process.wait()
            upstream = Upstream(gw)

            answers = [_initialize(server, token) for _ in range(3)]
            log = server.stderr()

    assert [answer.status_code for answer in answers] == [503] * 3
    assert answers[0].headers["retry-after"] == "10"
    assert answers[0].json()["error"] == "temporarily_unavailable"
    assert issuer.issuer in answers[0].json()["error_description"]
    assert log.count("could not be reached") == 1  # one line, however many requests
    assert upstream.reached() == []


def _initialize(server: ServerProcess, token: str) -> httpx.Response:
    headers = MCP_HEADERS | {"authorization": f"Bearer {token}"}
    return httpx.post(server.url, json=INITIALIZE, headers=headers, timeout=30)


# --- Revocation: SIGHUP ------------------------------------------------------------------------------------

TWO_CLIENTS = f"""
[clients.alice]
token_sha256 = "{hash_token(ALICE)}"

[clients.bob]
token_sha256 = "{hash_token(BOB)}"
"""
BOB_ONLY = f"""
[clients.bob]
token_sha256 = "{hash_token(BOB)}"
"""


def hang_up_as_the_readme_says(which: str, pid: int) -> None:
    """Run the README's SIGHUP command for `which` ("gguf-mcp" or "uvicorn"), for the process `pid`."""
    commands = [code_after("**Revoking a client without a restart.**", skip)[1].strip() for skip in (0, 1)]
    (command,) = [c for c in commands if f"<pid of {which}>" in c]
    subprocess.run(["/bin/bash", "-c", command.replace(f"<pid of {which}>", str(pid))], check=True, timeout=10)


@pytest.fixture
def two_clients(gw: Gateway, tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    config = write_config(tmp_path / "gguf-mcp.toml", gw, TWO_CLIENTS)
    with http_server(gw, tmp_path, {"GGUF_MCP_CONFIG": str(config)}, deployments=DEPLOYMENTS) as server:
        yield server, config


async def test_sighup_revokes_a_removed_client_and_keeps_the_others_sessions(
    two_clients: tuple[ServerProcess, Path], gw: Gateway
) -> None:
    server, config = two_clients
    statuses: list[int] = []

    async def seen(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    async with (
        connect_http(server.url, ALICE, seen, mode="legacy") as alice,
        connect_http(server.url, BOB, mode="legacy") as bob,
    ):
        assert not (await alice.call_tool("chat", EVERY_TOOL["chat"])).is_error
        bobs_session = bob.session  # the same session, before and after
        assert not (await bob.call_tool("chat", EVERY_TOOL["chat"])).is_error

        write_config(config, gw, BOB_ONLY)
        hang_up_as_the_readme_says("gguf-mcp", server.process.pid)
        server.wait_for_log("SIGHUP: clients read again")
        upstream = Upstream(gw)
        with pytest.raises(MCPError) as revoked:
            await alice.call_tool("chat", EVERY_TOOL["chat"])
        reached = upstream.reached()
        kept = await bob.call_tool("chat", EVERY_TOOL["chat"])

        config.write_text("[clients.broken\n")
        hang_up_as_the_readme_says("gguf-mcp", server.process.pid)
        server.wait_for_log("the clients were not reloaded")
        still = await bob.call_tool("chat", EVERY_TOOL["chat"])
        assert bob.session is bobs_session

    assert "Server returned an error response" in str(revoked.value)
    assert statuses[-1] == 401  # the revoked session's next request
    assert _initialize(server, ALICE).status_code == 401
    assert reached == []
    assert not kept.is_error and not still.is_error
    log = server.stderr()
    assert "SIGHUP: clients read again: 2 (removed: alice; added: none; changed: none)" in log
    assert "the 2 loaded before stay" in log  # default and bob
    assert ALICE not in log and BOB not in log


def uvicorn_workers(port: int) -> list[str]:
    return uvicorn_workers_argv(port, 2)


def worker_pids(supervisor: int) -> list[int]:
    """uvicorn's workers: the supervisor's children that run the app (multiprocessing's spawn)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [int(pid) for pid in children if "multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_text()]


def handles_sighup(pid: int) -> bool:
    """Whether the process catches SIGHUP (its reload loop runs), from the kernel's signal mask."""
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return bool(int(status["SigCgt"], 16) & (1 << (signal.SIGHUP - 1)))


def wait_until_reloadable(pids: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not all(handles_sighup(pid) for pid in pids):
        assert time.monotonic() < deadline, "a worker never started reloading on SIGHUP"
        time.sleep(0.05)  # polling another process's state: there is no event to wait on


def test_each_uvicorn_worker_reloads_the_clients_on_its_own_sighup(gw: Gateway, tmp_path: Path) -> None:
    config = write_config(tmp_path / "gguf-mcp.toml", gw, TWO_CLIENTS)
    settings = {"GGUF_MCP_CONFIG": str(config)}
    with http_server(gw, tmp_path, settings, deployments=DEPLOYMENTS, launcher=uvicorn_workers) as server:
        workers = worker_pids(server.process.pid)
        assert len(workers) == 2
        wait_until_reloadable(workers)  # /healthz answered from one; the other may still be starting
        write_config(config, gw, BOB_ONLY)
        hang_up_as_the_readme_says("uvicorn", server.process.pid)
        server.wait_for_log("SIGHUP: clients read again", count=2)
        answers = [(_initialize(server, ALICE).status_code, _initialize(server, BOB).status_code) for _ in range(8)]
        assert worker_pids(server.process.pid) == workers  # reloaded in place, not restarted

    assert answers == [(401, 200)] * 8


# --- The README's OAuth snippet, as written -------------------------------------------------------------


async def test_the_readmes_oauth_snippet_serves_its_metadata_and_takes_the_issuers_tokens(
    oidc_server: AuthorizationServer, gw: Gateway, tmp_path: Path
) -> None:
    _, text = code_after("### OAuth: sign-in through your identity provider")
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    script = text
    for placeholder, value in (
        ("https://login.example.com/realms/team", oidc_server.issuer),
        ("https://mcp.example.com/mcp", url),
        ("--host 0.0.0.0", "--host 127.0.0.1"),  # the suite stays on loopback
        ("--port 8000", f"--port {port}"),
        ("GGUF_DEPLOYMENT_ID=your-deployment-id", f"GGUF_BASE_URL={gw.base_url_for('alpha')}"),
        (".venv/bin/gguf-mcp", str(Path(sys.executable).parent / "gguf-mcp")),
    ):
        assert placeholder in script, placeholder
        script = script.replace(placeholder, value)
    env = base_env() | {"MODELSLAB_API_KEY": ACCOUNT_KEY}
    with serving(["/bin/bash", "-c", script], port, env, tmp_path / "stderr") as server:
        async with httpx.AsyncClient(timeout=10) as http:
            refused = await http.post(url, json=INITIALIZE, headers=MCP_HEADERS)
            metadata = (await http.get(f"{server.root}/.well-known/oauth-protected-resource/mcp")).json()
        async with connect_http(url, await oidc_server.client_credentials_token(url)) as client:
            tools = [tool.name for tool in (await client.list_tools()).tools]

    assert refused.status_code == 401 and "resource_metadata=" in refused.headers["www-authenticate"]
    assert (metadata["resource"], metadata["authorization_servers"]) == (url, [oidc_server.issuer])
    assert tools == list(EVERY_TOOL)
