"""Who owns each check on `/mcp`, in process: the SDK verifies the token, once per request.

gguf-mcp's own app (`build_app`, lifespan included) under Starlette's TestClient, with the real
`StaticTokenVerifier`, counted. Over real sockets, tests/test_http_security.py checks what
clients see; here, what only the process can tell: how often the token is checked, and that the
SDK's OAuth resource-server path (`AuthSettings(resource_server_url=...)`) works through our
route checks, for the identity settings to build on.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from pydantic import AnyHttpUrl, SecretStr
from starlette.testclient import TestClient

from gguf_mcp.config import load_settings
from gguf_mcp.fairshare import FairShare
from gguf_mcp.http import build_app
from gguf_mcp.http.auth import StaticTokenVerifier
from gguf_mcp.state import AppState
from gguf_mcp.upstream import UpstreamClient
from tests.support.bridge import INITIALIZE, MCP_HEADERS

TOKEN = "tok-canary-gate-4f1c9e2a7b3d5e80"
BASE = "http://127.0.0.1:8000"
BEARER = {"authorization": f"Bearer {TOKEN}"}


class CountingVerifier(StaticTokenVerifier):
    """The server's verifier, counting what it is asked."""

    def __init__(self, token: SecretStr) -> None:
        super().__init__(token)
        self.asked = 0

    async def verify_token(self, token: str) -> AccessToken | None:
        self.asked += 1
        return await super().verify_token(token)


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`serve(verifier, auth)`: gguf-mcp's app with that client auth, under a TestClient at BASE."""
    clients: list[TestClient] = []

    def serve(verifier: TokenVerifier, auth: AuthSettings) -> TestClient:
        environ = {"GGUF_BASE_URL": "http://127.0.0.1:9", "GGUF_MCP_AUTH_TOKEN": TOKEN}
        settings = load_settings({"transport": "http"}, environ)
        monkeypatch.setattr(importlib.import_module("gguf_mcp.http.app"), "client_auth", lambda _: (verifier, auth))
        upstream = UpstreamClient(httpx2.AsyncClient(), settings)
        app = build_app(AppState(settings, upstream, fairshare=FairShare.for_settings(settings, upstream)))
        client = TestClient(app, base_url=BASE)
        clients.append(client.__enter__())  # runs the lifespan: the SDK's session manager
        return client

    yield serve
    for client in clients:
        client.__exit__(None, None, None)


def static_auth() -> AuthSettings:
    return AuthSettings(issuer_url=AnyHttpUrl("http://localhost"), resource_server_url=None)


def test_the_sdk_verifies_the_token_once_per_request_and_nothing_else_does(serve: Any) -> None:
    verifier = CountingVerifier(SecretStr(TOKEN))
    client = serve(verifier, static_auth())
    answers = {
        "initialize": client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS | BEARER).status_code,
        "get": client.get("/mcp", headers=BEARER).status_code,
        "wrong token": client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS | {"authorization": "Bearer x"}),
    }
    assert (answers["initialize"], answers["get"], answers["wrong token"].status_code) == (200, 405, 401)
    assert verifier.asked == 3
    assert client.get("/mcp").status_code == 401  # no bearer: nothing to ask
    assert verifier.asked == 3


def test_with_a_resource_server_url_every_401_names_the_metadata_the_sdk_publishes(serve: Any) -> None:
    """The SDK's OAuth resource-server path, which the identity settings will switch on."""
    resource = f"{BASE}/mcp"
    auth = AuthSettings(
        issuer_url=AnyHttpUrl("https://issuer.example"),
        resource_server_url=AnyHttpUrl(resource),
        validate_token_resource=False,  # the static verifier names no resource
    )
    client = serve(CountingVerifier(SecretStr(TOKEN)), auth)
    metadata_url = f"{BASE}/.well-known/oauth-protected-resource/mcp"
    for method in ("POST", "GET", "DELETE"):
        refused = client.request(method, "/mcp", headers=MCP_HEADERS)
        assert refused.status_code == 401, method
        assert f'resource_metadata="{metadata_url}"' in refused.headers["www-authenticate"]
    metadata = client.get(metadata_url)
    assert metadata.status_code == 200
    assert metadata.json()["resource"] == resource
    assert metadata.json()["authorization_servers"] == ["https://issuer.example/"]
    # Our route checks hold on the SDK's routes too.
    assert client.get(metadata_url, headers={"host": "rebind.evil.example"}).status_code == 421
    assert client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS | BEARER).status_code == 200
