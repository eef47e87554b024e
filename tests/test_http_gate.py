"""Who owns each check on `/mcp`, in process: the SDK verifies the token, once per request.

gguf-mcp's own app (`build_app`, lifespan included) under Starlette's TestClient, with the real
`IdentityVerifier`, counted. Over real sockets, tests/test_http_security.py and
tests/test_http_identity.py check what clients see; here, what only the process can tell: how
often the token is checked, and that the SDK's OAuth resource-server path works through our
route checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.requests import Request
from starlette.testclient import TestClient

from gguf_mcp.config import load_settings
from gguf_mcp.http import build_app
from gguf_mcp.http.auth import scope_refusal
from gguf_mcp.identity import IdentifiedToken, IdentityVerifier
from tests.support.bridge import INITIALIZE, MCP_HEADERS
from tests.support.upstream import offline_state

TOKEN = "tok-canary-gate-4f1c9e2a7b3d5e80"
BASE = "http://127.0.0.1:8000"
BEARER = {"authorization": f"Bearer {TOKEN}"}
DOWN_ISSUER = "http://127.0.0.1:9"
"""An issuer nobody answers for (the discard port): every access token waits on it in vain."""


class CountingVerifier(IdentityVerifier):
    """The server's verifier, counting what it is asked."""

    asked = 0
    closed = False

    async def verify_token(self, token: str) -> IdentifiedToken | None:
        self.asked += 1
        return await super().verify_token(token)

    async def aclose(self) -> None:
        self.closed = True
        await super().aclose()


@pytest.fixture
def serve() -> Iterator[Any]:
    """`serve(**environ)`: gguf-mcp's app with that environment (and TOKEN), under a TestClient at BASE;
    returns the client and its verifier."""
    clients: list[TestClient] = []

    def serve(**environ: str) -> tuple[TestClient, CountingVerifier]:
        environ = {"GGUF_BASE_URL": "http://127.0.0.1:9", "GGUF_MCP_AUTH_TOKEN": TOKEN, **environ}
        settings = load_settings({"transport": "http"}, environ)
        state = offline_state(settings)
        verifier = CountingVerifier(state.identity.directory, state.identity.access_tokens)
        app = build_app(replace(state, identity=verifier))
        client = TestClient(app, base_url=BASE)
        clients.append(client.__enter__())  # runs the lifespan: the SDK's session manager
        return client, verifier

    yield serve
    for client in clients:
        client.__exit__(None, None, None)


def test_the_sdk_verifies_the_token_once_per_request_and_nothing_else_does(serve: Any) -> None:
    client, verifier = serve()
    answers = {
        "initialize": client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS | BEARER).status_code,
        "get": client.get("/mcp", headers=BEARER).status_code,
        "wrong token": client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS | {"authorization": "Bearer x"}),
    }
    assert (answers["initialize"], answers["get"], answers["wrong token"].status_code) == (200, 405, 401)
    assert verifier.asked == 3
    assert client.get("/mcp").status_code == 401  # no bearer: nothing to ask
    assert verifier.asked == 3


def test_the_identity_checks_http_client_is_closed_when_the_app_shuts_down(serve: Any) -> None:
    client, verifier = serve(GGUF_MCP_OAUTH_ISSUER=DOWN_ISSUER, GGUF_MCP_PUBLIC_URL=f"{BASE}/mcp")
    assert not verifier.closed
    client.__exit__(None, None, None)  # the lifespan's end (the fixture's second exit does nothing more)
    assert verifier.closed


def test_with_an_issuer_every_401_names_the_metadata_which_lists_the_scopes(serve: Any) -> None:
    """The SDK's OAuth resource-server path (GGUF_MCP_OAUTH_ISSUER), through our route checks."""
    resource = f"{BASE}/mcp"
    client, _ = serve(GGUF_MCP_OAUTH_ISSUER=DOWN_ISSUER, GGUF_MCP_PUBLIC_URL=resource)
    metadata_url = f"{BASE}/.well-known/oauth-protected-resource/mcp"
    for method in ("POST", "GET", "DELETE"):
        refused = client.request(method, "/mcp", headers=MCP_HEADERS)
        assert refused.status_code == 401, method
        challenge = refused.headers["www-authenticate"]
        assert f'resource_metadata="{metadata_url}"' in challenge
        assert 'scope="gguf:models gguf:generate gguf:embed"' in challenge
        assert DOWN_ISSUER in refused.json()["error_description"]  # where to sign in
    metadata = client.get(metadata_url)
    assert metadata.status_code == 200
    assert metadata.json()["resource"] == resource
    assert metadata.json()["authorization_servers"] == [DOWN_ISSUER]
    assert metadata.json()["scopes_supported"] == ["gguf:models", "gguf:generate", "gguf:embed", "gguf:metrics"]
    # Our route checks hold on the SDK's routes too.
    assert client.get(metadata_url, headers={"host": "rebind.evil.example"}).status_code == 421
    assert client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS | BEARER).status_code == 200  # named: no issuer


def test_an_access_token_the_issuer_cannot_check_gets_503_and_is_not_accepted(serve: Any) -> None:
    client, verifier = serve(GGUF_MCP_OAUTH_ISSUER=DOWN_ISSUER, GGUF_MCP_PUBLIC_URL=f"{BASE}/mcp")
    unchecked = {"authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.e30.c2ln"}
    refused = client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS | unchecked)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "10"
    assert refused.json()["error"] == "temporarily_unavailable" and DOWN_ISSUER in refused.json()["error_description"]
    assert verifier.asked == 1
    # The next request's verdict is its own: no bearer is 401, not the last request's outage.
    assert client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS).status_code == 401


# --- Another route's scope (the /metrics rule): `scope_refusal` ------------------------------------------


def request_to(server: tuple[str, int], user: object = None) -> Request:
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/metrics", "headers": [], "server": server}
    if user is not None:
        scope["user"] = user
    return Request(scope)


def user_with(*scopes: str) -> AuthenticatedUser:
    return AuthenticatedUser(AccessToken(token="[redacted]", client_id="ops", scopes=list(scopes)))


def test_a_route_needing_a_scope_answers_401_403_or_serves_when_the_server_has_credentials() -> None:
    environ = {
        "GGUF_BASE_URL": "http://127.0.0.1:9",
        "GGUF_MCP_OAUTH_ISSUER": DOWN_ISSUER,
        "GGUF_MCP_PUBLIC_URL": f"{BASE}/mcp",
    }
    settings = load_settings({"transport": "http"}, environ)
    loopback = ("127.0.0.1", 8000)

    anonymous = scope_refusal(request_to(loopback), "gguf:metrics", settings)
    without = scope_refusal(request_to(loopback, user_with("gguf:models")), "gguf:metrics", settings)
    allowed = scope_refusal(request_to(loopback, user_with("gguf:metrics")), "gguf:metrics", settings)

    assert anonymous is not None and anonymous.status_code == 401  # loopback is no credential here
    assert "resource_metadata=" in anonymous.headers["www-authenticate"]
    assert without is not None and without.status_code == 403
    assert (
        'error="insufficient_scope", error_description="This request needs gguf:metrics; the token has '
        in (without.headers["www-authenticate"])
    )
    assert 'scope="gguf:metrics"' in without.headers["www-authenticate"]
    assert allowed is None


def test_a_route_needing_a_scope_answers_loopback_only_when_the_server_has_no_credentials() -> None:
    settings = load_settings({"transport": "http"}, {"GGUF_BASE_URL": "http://127.0.0.1:9"})
    assert scope_refusal(request_to(("127.0.0.1", 8000)), "gguf:metrics", settings) is None
    elsewhere = scope_refusal(request_to(("10.1.2.3", 8000)), "gguf:metrics", settings)
    assert elsewhere is not None and elsewhere.status_code == 403
