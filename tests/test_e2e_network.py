"""The network between gguf-mcp and a deployment: HTTPS (GGUF Cloud is only reachable that way),
a private CA, and the standard proxy variables (HTTPS_PROXY, HTTP_PROXY, NO_PROXY).

gguf-mcp runs as the MCP client spawns it (stdio); the deployment is the gateway emulator's,
behind a TLS front with a certificate made for the test, and/or a forwarding proxy.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.bridge import Bridge
from tests.support.calls import text_of
from tests.support.cli import run_cli
from tests.support.gateway import ACCOUNT_KEY, Gateway
from tests.support.netpath import ForwardProxy, TlsFront, self_signed_certificate

DEP = "dep-net"
ROUTE = f"/api/gguf/{DEP}"
USER = [{"role": "user", "content": "Hello"}]
PROXY_PASSWORD = "canary-proxy-password-5d1e"


@pytest.fixture
def gw(gateway: Gateway) -> Gateway:
    gateway.add_canned_deployment(DEP)
    return gateway


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path)


@pytest.fixture
def front(gw: Gateway, certificate: tuple[Path, Path]) -> Iterator[TlsFront]:
    with TlsFront(gw.url, *certificate) as tls:
        yield tls


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy() as forward:
        yield forward


async def call_both_protocols(bridge: Bridge, env: dict[str, str]) -> list[str]:
    """Texts of a chat and a messages call (the two auth headers), errors included."""
    async with bridge.connect({"MODELSLAB_API_KEY": ACCOUNT_KEY, **env}) as client:
        chat = await client.call_tool("chat", {"messages": USER, "max_tokens": 1})
        messages = await client.call_tool("messages", {"messages": USER, "max_tokens": 1})
    assert ACCOUNT_KEY not in bridge.seen_text()
    return [("error: " if r.is_error else "") + text_of(r) for r in (chat, messages)]


async def test_https_deployment_signed_by_a_ca_named_in_ssl_cert_file(
    tmp_path: Path, gw: Gateway, front: TlsFront, certificate: tuple[Path, Path]
) -> None:
    env = {"GGUF_BASE_URL": front.url + ROUTE, "SSL_CERT_FILE": str(certificate[0])}
    texts = await call_both_protocols(Bridge("stdio", tmp_path), env)
    assert not any(t.startswith("error") for t in texts), texts
    assert [(r.path, r.auth_via) for r in gw.requests_for(DEP)] == [
        ("/v1/chat/completions", "bearer"),
        ("/v1/messages", "x-api-key"),
    ]


async def test_https_deployment_with_an_unknown_ca_says_what_to_set(
    tmp_path: Path, gw: Gateway, front: TlsFront
) -> None:
    texts = await call_both_protocols(Bridge("stdio", tmp_path), {"GGUF_BASE_URL": front.url + ROUTE})
    for text in texts:
        assert text.startswith("error: ")
        assert "TLS certificate that did not verify" in text
        assert "set SSL_CERT_FILE" in text
        assert "gave up after" not in text  # a certificate does not heal with retries
    assert gw.requests_for(DEP) == []


async def test_http_proxy_carries_every_request_unless_no_proxy_names_the_host(
    tmp_path: Path, gw: Gateway, proxy: ForwardProxy
) -> None:
    env = {"GGUF_BASE_URL": gw.base_url_for(DEP), "HTTP_PROXY": proxy.url}
    texts = await call_both_protocols(Bridge("stdio", tmp_path), env)
    assert not any(t.startswith("error") for t in texts), texts
    assert proxy.seen == [
        f"POST {gw.base_url_for(DEP)}/v1/chat/completions HTTP/1.1",
        f"POST {gw.base_url_for(DEP)}/v1/messages HTTP/1.1",
    ]
    assert len(gw.requests_for(DEP)) == 2

    texts = await call_both_protocols(Bridge("stdio", tmp_path), {**env, "NO_PROXY": "127.0.0.1"})
    assert not any(t.startswith("error") for t in texts), texts
    assert len(proxy.seen) == 2  # went direct
    assert len(gw.requests_for(DEP)) == 4


async def test_a_proxy_asking_for_credentials_gets_those_in_its_url_and_nobody_else_does(
    tmp_path: Path, gw: Gateway, proxy: ForwardProxy
) -> None:
    user, password = "agent", "p@ss " + PROXY_PASSWORD
    proxy_url = proxy.url.replace("http://", f"http://{user}:{quote(password, safe='')}@")
    bridge = Bridge("stdio", tmp_path)
    env = {"GGUF_BASE_URL": gw.base_url_for(DEP), "HTTP_PROXY": proxy_url, "GGUF_MCP_LOG_LEVEL": "debug"}
    texts = await call_both_protocols(bridge, env)
    assert not any(t.startswith("error") for t in texts), texts
    expected = "Proxy-Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    assert proxy.heads, "no request reached the proxy"
    assert all(expected.lower() in head.decode("latin-1").lower() for head in proxy.heads)
    assert all("proxy-authorization" not in r.headers for r in gw.requests_for(DEP))  # not passed on
    assert PROXY_PASSWORD not in bridge.seen_text()


async def test_https_through_a_proxy_is_tunnelled_so_the_proxy_never_sees_the_key(
    tmp_path: Path, gw: Gateway, front: TlsFront, proxy: ForwardProxy, certificate: tuple[Path, Path]
) -> None:
    proxy_url = proxy.url.replace("http://", f"http://agent:{PROXY_PASSWORD}@")
    env = {"GGUF_BASE_URL": front.url + ROUTE, "HTTPS_PROXY": proxy_url, "SSL_CERT_FILE": str(certificate[0])}
    bridge = Bridge("stdio", tmp_path)
    texts = await call_both_protocols(bridge, env)
    assert not any(t.startswith("error") for t in texts), texts
    assert proxy.seen and all(line == f"CONNECT 127.0.0.1:{front.port} HTTP/1.1" for line in proxy.seen)
    credentials = base64.b64encode(f"agent:{PROXY_PASSWORD}".encode()).decode()
    assert proxy.heads, "no tunnel request reached the proxy"
    assert all(f"proxy-authorization: basic {credentials}".lower() in h.decode().lower() for h in proxy.heads)
    assert not any(ACCOUNT_KEY.encode() in head for head in proxy.heads)
    assert len(gw.requests_for(DEP)) == 2
    assert PROXY_PASSWORD not in bridge.seen_text()


@pytest.mark.parametrize(
    "command", [[], ["--transport", "http"], ["doctor"], ["ask", "Hi"]], ids=["stdio", "http", "doctor", "ask"]
)
def test_an_unsupported_proxy_scheme_stops_the_start_with_one_line_without_its_credentials(
    gw: Gateway, command: list[str]
) -> None:
    env = {
        "GGUF_BASE_URL": gw.base_url_for(DEP),
        "MODELSLAB_API_KEY": ACCOUNT_KEY,
        "HTTP_PROXY": f"socks5://user:{PROXY_PASSWORD}@127.0.0.1:1080",
    }
    done = run_cli(*command, env=env)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("gguf-mcp: configuration error: ")
    assert "socks5://" in line
    assert "NO_PROXY" in line
    assert PROXY_PASSWORD not in done.stderr + done.stdout
    assert gw.requests_for(DEP) == []


@pytest.mark.parametrize(
    "command", [[], ["--transport", "http"], ["doctor"], ["ask", "Hi"]], ids=["stdio", "http", "doctor", "ask"]
)
@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
def test_a_ca_bundle_that_is_not_there_stops_the_start_with_one_line(
    gw: Gateway, tmp_path: Path, command: list[str], variable: str
) -> None:
    """The TLS context is built on first use (not at start), so what would break it is checked at start."""
    missing = tmp_path / "no-such-ca"
    env = {"GGUF_BASE_URL": gw.base_url_for(DEP), variable: str(missing)}
    done = run_cli(*command, env=env)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"gguf-mcp: configuration error: {variable}={missing} cannot be used (it does not exist)")
    assert gw.requests_for(DEP) == []


async def test_a_ca_bundle_that_is_not_pem_is_said_at_the_first_call_which_builds_the_tls_context(
    tmp_path: Path, gw: Gateway
) -> None:
    """Starting and listing tools builds no TLS context (the cold start's ~20 ms); the first call does,
    and a CA file it cannot load is that call's error, one line naming the setting."""
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    env = {"GGUF_BASE_URL": gw.base_url_for(DEP), "SSL_CERT_FILE": str(garbage)}
    async with Bridge("stdio", tmp_path).connect(env) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} >= {"chat", "messages"}
        result = await client.call_tool("chat", {"messages": USER, "max_tokens": 1})
    assert result.is_error
    assert f"SSL_CERT_FILE={garbage} cannot be used" in text_of(result)
    assert gw.requests_for(DEP) == []
