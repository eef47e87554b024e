"""Who a bearer is: JWT access tokens, introspected opaque tokens and named clients.

Tokens come from a real authorization server (oidc-provider, tests/support/oidc.py): client
credentials and authorization code tokens it issues, and tokens the test signs with that
server's own keys for what it would never issue (expired, another issuer, ...). Every refusal
checks the reason logged, so a token refused for the wrong reason fails its test.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import httpx2
import jwt
import pytest
import uvicorn
from mcp.client import Client as MCPClient
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientMetadata
from pydantic import AnyUrl, SecretStr

from gguf_mcp.clients import DEFAULT_CLIENT, SCOPES, USE_SCOPES, Caller, Client, ClientPolicy, hash_token
from gguf_mcp.identity import (
    ClientDirectory,
    IdentityVerifier,
    IntrospectionVerifier,
    JWTVerifier,
    caller_of,
    issuer_outage,
)
from gguf_mcp.identity.introspection import CACHE_S
from gguf_mcp.identity.keys import MAX_AGE_S, REFRESH_INTERVAL_S, RETRY_S
from gguf_mcp.identity.remote import OUTAGE_LOG_INTERVAL_S
from tests.support.bridge import free_port
from tests.support.oidc import (
    AuthorizationServer,
    MemoryStorage,
    SigningKey,
    claims_of,
    hs256_with_public_key,
    rsa_key,
    start_oidc_server,
    tampered,
    unsigned,
)

RESOURCE = "http://127.0.0.1:8000/mcp"
"""This server's public URL in these tests (GGUF_MCP_PUBLIC_URL): the audience tokens must name."""
OTHER_RESOURCE = "http://127.0.0.1:8001/mcp"
OPAQUE_RESOURCE = "http://127.0.0.1:8002/mcp"
LOGGER = "gguf_mcp.identity"


class FakeClock:
    """Monotonic seconds that move only when the test says (the key cache's and outage log's clock)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def verifier(oidc_server: AuthorizationServer, clock: FakeClock) -> AsyncIterator[JWTVerifier]:
    """A fresh verifier (nothing cached) for the session's authorization server and RESOURCE."""
    checker = JWTVerifier(oidc_server.issuer, RESOURCE, clock=clock)
    yield checker
    await checker.aclose()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Access token refused")]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


# --- Accepted tokens -------------------------------------------------------------------------------


async def test_a_client_credentials_token_is_accepted_with_its_client_and_scopes(
    oidc_server: AuthorizationServer, verifier: JWTVerifier
) -> None:
    token = await oidc_server.client_credentials_token(RESOURCE, scope="gguf:models gguf:generate")

    verified = await verifier.verify_token(token)

    assert verified is not None
    assert (verified.client_id, verified.subject, verified.resource) == ("machine", "machine", RESOURCE)
    assert verified.scopes == ["gguf:models", "gguf:generate"]
    assert verified.expires_at == claims_of(token)["exp"]
    assert verified.claims is not None and verified.claims["iss"] == oidc_server.issuer
    # The SDK keeps this record on the request: the token itself is never in it.
    assert verified.token == "[redacted]"
    assert token not in repr(verified) and token not in verified.model_dump_json()


async def test_an_authorization_code_token_names_the_user_and_the_registered_client(
    oidc_server: AuthorizationServer, verifier: JWTVerifier
) -> None:
    client_id, token = await oidc_server.authorization_code_token(RESOURCE, user="bob", scope="gguf:embed")

    verified = await verifier.verify_token(token)

    assert verified is not None
    assert (verified.client_id, verified.subject, verified.scopes) == (client_id, "bob", ["gguf:embed"])


@pytest.mark.parametrize("alg", ["ES256", "PS256"])
async def test_other_asymmetric_algorithms_of_the_issuer_are_accepted(
    oidc_server: AuthorizationServer, verifier: JWTVerifier, alg: str
) -> None:
    """PS256 uses the RSA key published without `alg`; ES256 the EC key published with one."""
    resource = f"http://127.0.0.1:8003/{alg}"
    oidc_server.issue_for(resource, alg=alg)
    token = await oidc_server.client_credentials_token(resource)
    assert jwt.get_unverified_header(token)["alg"] == alg
    checker = JWTVerifier(oidc_server.issuer, resource)
    try:
        assert await checker.verify_token(token) is not None
    finally:
        await checker.aclose()


@pytest.mark.parametrize(
    ("shape", "client_id", "scopes"),
    [
        ({"client_id": None, "azp": "auth0-app", "scope": "gguf:models"}, "auth0-app", ["gguf:models"]),
        ({"client_id": None, "cid": "okta-app", "scope": None, "scp": ["gguf:embed", 7]}, "okta-app", ["gguf:embed"]),
        ({"client_id": None, "azp": "entra-app", "scope": None, "scp": "gguf:models gguf:embed"}, "entra-app",
         ["gguf:models", "gguf:embed"]),
        ({"client_id": None, "appid": "entra-v1-app", "scope": None}, "entra-v1-app", []),
    ],
    ids=["azp+scope", "cid+scp-list", "azp+scp-string", "appid-no-scope"],
)  # fmt: skip
async def test_other_providers_spellings_of_client_and_scopes_are_read(
    oidc_server: AuthorizationServer,
    verifier: JWTVerifier,
    shape: dict[str, Any],
    client_id: str,
    scopes: list[str],
) -> None:
    verified = await verifier.verify_token(oidc_server.mint(RESOURCE, headers={"typ": "JWT"}, **shape))
    assert verified is not None
    assert (verified.client_id, verified.scopes) == (client_id, scopes)


async def test_a_key_published_for_one_algorithm_verifies_that_one(
    oidc_server: AuthorizationServer, verifier: JWTVerifier
) -> None:
    pinned = oidc_server.keys[2]
    assert pinned.jwk()["alg"] == "RS256"
    assert await verifier.verify_token(oidc_server.mint(RESOURCE, key=pinned)) is not None


async def test_an_audience_list_holding_this_server_is_accepted_for_it(
    oidc_server: AuthorizationServer, verifier: JWTVerifier
) -> None:
    verified = await verifier.verify_token(oidc_server.mint(RESOURCE, aud=[OTHER_RESOURCE, RESOURCE]))
    assert verified is not None and verified.resource == RESOURCE


async def test_a_token_from_an_issuer_clock_up_to_a_minute_ahead_is_accepted(
    oidc_server: AuthorizationServer, verifier: JWTVerifier
) -> None:
    ahead = now() + 45
    assert await verifier.verify_token(oidc_server.mint(RESOURCE, iat=ahead, nbf=ahead)) is not None


# --- Refusals ----------------------------------------------------------------------------------------

Forger = Callable[[AuthorizationServer], Any]


def _wrong_key_type(server: AuthorizationServer) -> str:
    """Signed by the EC key but naming the RSA key's kid: the key must fit the algorithm."""
    return server.keys[1].sign(claims_of(server.mint(RESOURCE)), {"kid": server.key.kid})


def now() -> int:
    return int(time.time())


REFUSALS: dict[str, tuple[Forger, str]] = {
    "expired": (lambda s: s.mint(RESOURCE, iat=now() - 600, exp=now() - 300), "it has expired"),
    "expired a second ago (no leeway on exp)": (lambda s: s.mint(RESOURCE, exp=now() - 1), "it has expired"),
    "not yet valid": (lambda s: s.mint(RESOURCE, nbf=now() + 90), "not yet valid"),
    "issued in the future": (lambda s: s.mint(RESOURCE, iat=now() + 90), "not yet valid"),
    "wrong issuer": (lambda s: s.mint(RESOURCE, iss="http://127.0.0.1:1"), "issued by 'http://127.0.0.1:1'"),
    "alg none": (
        lambda s: unsigned({"alg": "none", "typ": "at+jwt", "kid": s.key.kid}, claims_of(s.mint(RESOURCE))),
        "algorithm 'none' is not one of",
    ),
    "HS256 signed with the public key": (
        lambda s: hs256_with_public_key(s, RESOURCE),
        "algorithm 'HS256' is not one of",
    ),
    "unknown kid": (lambda s: s.mint(RESOURCE, key=rsa_key("not-the-issuers")), "no key with kid 'not-the-issuers'"),
    "key of the issuer, signed by another": (
        lambda s: rsa_key(s.key.kid).sign(claims_of(s.mint(RESOURCE))),
        "signature does not verify",
    ),
    "EC signature under the RSA key's kid": (_wrong_key_type, "no key with kid 'rs-1' for ES256"),
    "PS256 by a key published for RS256": (
        lambda s: SigningKey("rs-pinned", "PS256", s.keys[2].private).sign(claims_of(s.mint(RESOURCE))),
        "not the one its key is published for",
    ),
    "tampered payload": (lambda s: tampered(s, RESOURCE), "signature does not verify"),
    "no exp": (lambda s: s.mint(RESOURCE, exp=None), "lacks a required claim"),
    "no client": (lambda s: s.mint(RESOURCE, client_id=None), "names no client"),
    "an ID token's type": (lambda s: s.mint(RESOURCE, headers={"typ": "logout+jwt"}), "type 'logout+jwt'"),
    "bound to a DPoP key": (
        lambda s: s.mint(RESOURCE, cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}),
        "bound to a key",
    ),
    "not a JWT": (lambda s: "opaque-looking-token", "not a JWT"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_a_forged_or_invalid_token_is_refused_for_its_reason(
    oidc_server: AuthorizationServer, verifier: JWTVerifier, logs: pytest.LogCaptureFixture, case: str
) -> None:
    forge, reason = REFUSALS[case]
    assert await verifier.verify_token(oidc_server.mint(RESOURCE)) is not None  # the same verifier accepts

    assert await verifier.verify_token(forge(oidc_server)) is None

    assert [m for m in refusals(logs) if reason in m], f"no refusal naming {reason!r}: {refusals(logs)}"


async def test_a_token_the_issuer_made_for_another_resource_is_refused(
    oidc_server: AuthorizationServer, verifier: JWTVerifier, logs: pytest.LogCaptureFixture
) -> None:
    token = await oidc_server.client_credentials_token(OTHER_RESOURCE)
    assert claims_of(token)["aud"] == OTHER_RESOURCE

    assert await verifier.verify_token(token) is None

    assert [m for m in refusals(logs) if f"audience '{OTHER_RESOURCE}' is not this server" in m], refusals(logs)


# --- Keys: discovery, cache, refresh ------------------------------------------------------------------


def _served_since(server: AuthorizationServer, before: list[str]) -> list[str]:
    return server.requests()[len(before) :]


@pytest.mark.parametrize(
    ("path", "rfc8414", "asked"),
    [
        ("", True, ["GET /.well-known/oauth-authorization-server"]),
        ("", False, ["GET /.well-known/oauth-authorization-server", "GET /.well-known/openid-configuration"]),
        ("/tenant", True, ["GET /.well-known/oauth-authorization-server/tenant"]),
        (
            "/tenant",
            False,
            [
                "GET /.well-known/oauth-authorization-server/tenant",
                "GET /.well-known/openid-configuration/tenant",
                "GET /tenant/.well-known/openid-configuration",
            ],
        ),
    ],
    ids=["rfc8414", "openid", "path-rfc8414", "path-openid"],
)
async def test_the_metadata_is_found_where_rfc8414_then_openid_put_it(
    path: str, rfc8414: bool, asked: list[str]
) -> None:
    with start_oidc_server(path, rfc8414=rfc8414) as server:
        token = server.mint(RESOURCE)
        before = server.requests()
        checker = JWTVerifier(server.issuer, RESOURCE)
        try:
            assert await checker.verify_token(token) is not None
        finally:
            await checker.aclose()
        assert _served_since(server, before) == [*asked, f"GET {path}/jwks"]


async def test_a_burst_of_unknown_kids_fetches_the_keys_at_most_once_a_minute(
    oidc_server: AuthorizationServer, verifier: JWTVerifier, clock: FakeClock
) -> None:
    assert await verifier.verify_token(oidc_server.mint(RESOURCE)) is not None  # keys fetched once
    strangers = [oidc_server.mint(RESOURCE, key=rsa_key(f"stranger-{i}")) for i in range(3)]
    burst = [strangers[i % 3] for i in range(60)]

    async def verify_all() -> list[object]:
        results: list[object] = []
        async with anyio.create_task_group() as group:
            for token in burst:
                group.start_soon(lambda t: _append(results, verifier.verify_token(t)), token)
        return results

    before = oidc_server.requests()
    assert await verify_all() == [None] * len(burst)
    assert _served_since(oidc_server, before).count("GET /jwks") == 0  # fetched less than a minute ago

    clock.advance(REFRESH_INTERVAL_S)
    before = oidc_server.requests()
    assert await verify_all() == [None] * len(burst)
    assert _served_since(oidc_server, before).count("GET /jwks") == 1

    assert await verifier.verify_token(oidc_server.mint(RESOURCE)) is not None  # the issuer's own still pass


async def _append(results: list[object], pending: Any) -> None:
    results.append(await pending)


async def test_keys_are_fetched_again_once_they_are_old(
    oidc_server: AuthorizationServer, verifier: JWTVerifier, clock: FakeClock
) -> None:
    token = oidc_server.mint(RESOURCE)
    assert await verifier.verify_token(token) is not None
    clock.advance(MAX_AGE_S - 1)
    before = oidc_server.requests()
    assert await verifier.verify_token(token) is not None
    assert _served_since(oidc_server, before) == []

    clock.advance(1)
    for _ in range(5):
        assert await verifier.verify_token(token) is not None
    assert _served_since(oidc_server, before) == ["GET /jwks"]


async def test_old_keys_keep_verifying_while_the_issuer_fails_and_it_is_asked_once_a_minute(
    oidc_server: AuthorizationServer, verifier: JWTVerifier, clock: FakeClock, logs: pytest.LogCaptureFixture
) -> None:
    token = oidc_server.mint(RESOURCE)
    assert await verifier.verify_token(token) is not None
    before = oidc_server.requests()
    oidc_server.fail("/jwks", 503)
    try:
        clock.advance(MAX_AGE_S)
        for _ in range(5):
            assert await verifier.verify_token(token) is not None
        clock.advance(REFRESH_INTERVAL_S)
        assert await verifier.verify_token(token) is not None
    finally:
        oidc_server.fail("/jwks", 0)
    assert _served_since(oidc_server, before).count("GET /jwks") == 2
    assert len(warnings_of(logs)) == 2  # a line a minute
    assert "jwks answered HTTP 503; keeping the keys fetched before" in warnings_of(logs)[0]


async def test_after_a_failed_key_fetch_the_metadata_is_read_again(
    oidc_server: AuthorizationServer, verifier: JWTVerifier, clock: FakeClock
) -> None:
    """The keys may have moved (the issuer's new jwks_uri): a failed fetch rediscovers."""
    assert await verifier.verify_token(oidc_server.mint(RESOURCE)) is not None
    stranger = oidc_server.mint(RESOURCE, key=rsa_key("stranger"))
    before = oidc_server.requests()
    oidc_server.fail("/jwks", 503)
    try:
        clock.advance(REFRESH_INTERVAL_S)
        assert await verifier.verify_token(stranger) is None
    finally:
        oidc_server.fail("/jwks", 0)
    clock.advance(REFRESH_INTERVAL_S)
    assert await verifier.verify_token(stranger) is None
    assert _served_since(oidc_server, before) == [
        "GET /jwks",
        "GET /.well-known/oauth-authorization-server",
        "GET /jwks",
    ]


# --- The issuer unreachable ------------------------------------------------------------------------------


async def test_an_unreachable_issuer_refuses_every_token_with_one_log_line_a_minute(
    oidc_server: AuthorizationServer, clock: FakeClock, logs: pytest.LogCaptureFixture
) -> None:
    issuer = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    checker = JWTVerifier(issuer, RESOURCE, clock=clock)
    token = oidc_server.mint(RESOURCE, iss=issuer)
    try:
        for _ in range(20):
            assert await checker.verify_token(token) is None
        clock.advance(RETRY_S)  # asked again, not logged again
        assert await checker.verify_token(token) is None
        assert len(warnings_of(logs)) == 1
        assert issuer in warnings_of(logs)[0] and "could not be reached" in warnings_of(logs)[0]
        assert "refusing every access token" in warnings_of(logs)[0]
        assert issuer_outage.get() == issuer  # the HTTP layer can tell the issuer's fault from the token's

        clock.advance(OUTAGE_LOG_INTERVAL_S)
        assert await checker.verify_token(token) is None
        assert len(warnings_of(logs)) == 2
    finally:
        await checker.aclose()


async def test_an_issuer_without_metadata_is_asked_again_only_every_few_seconds(
    oidc_server: AuthorizationServer, clock: FakeClock, logs: pytest.LogCaptureFixture
) -> None:
    issuer = oidc_server.issuer + "/no-such-tenant"
    checker = JWTVerifier(issuer, RESOURCE, clock=clock)
    token = oidc_server.mint(RESOURCE, iss=issuer)
    before = oidc_server.requests()
    try:
        for _ in range(10):
            assert await checker.verify_token(token) is None
        assert len(_served_since(oidc_server, before)) == 3  # the three places metadata may be, once
        clock.advance(RETRY_S)
        for _ in range(10):
            assert await checker.verify_token(token) is None
        assert len(_served_since(oidc_server, before)) == 6
    finally:
        await checker.aclose()
    (warning,) = warnings_of(logs)
    assert "no authorization server metadata found at" in warning and "(HTTP 404)" in warning


async def test_keys_already_fetched_keep_working_while_the_issuer_is_down(
    clock: FakeClock, logs: pytest.LogCaptureFixture
) -> None:
    with start_oidc_server() as server:
        checker = JWTVerifier(server.issuer, RESOURCE, clock=clock)
        token = server.mint(RESOURCE)
        stranger = server.mint(RESOURCE, key=rsa_key("stranger"))
        assert await checker.verify_token(token) is not None
        server.process.terminate()
        server.process.wait()

        clock.advance(REFRESH_INTERVAL_S)
        assert await checker.verify_token(stranger) is None  # its key may be new: asked, in vain
        assert await checker.verify_token(token) is not None
        await checker.aclose()
    assert len(warnings_of(logs)) == 1 and "keeping the keys fetched before" in warnings_of(logs)[0]


async def test_metadata_naming_another_issuer_is_refused_with_the_fix(
    oidc_server: AuthorizationServer, logs: pytest.LogCaptureFixture
) -> None:
    checker = JWTVerifier(oidc_server.issuer + "/", RESOURCE)  # the trailing slash the server does not write
    try:
        assert await checker.verify_token(oidc_server.mint(RESOURCE, iss=oidc_server.issuer + "/")) is None
    finally:
        await checker.aclose()
    (warning,) = warnings_of(logs)
    assert f"names issuer '{oidc_server.issuer}', not '{oidc_server.issuer}/'" in warning
    assert "a trailing slash counts" in warning


# --- Opaque tokens: introspection ---------------------------------------------------------------------------


@pytest.fixture
async def introspection(oidc_server: AuthorizationServer, clock: FakeClock) -> AsyncIterator[IntrospectionVerifier]:
    oidc_server.issue_for(OPAQUE_RESOURCE, format="opaque")
    checker = IntrospectionVerifier(
        oidc_server.metadata_endpoint("introspection_endpoint"),
        oidc_server.resource_server.client_id,
        SecretStr(oidc_server.resource_server.client_secret),
        OPAQUE_RESOURCE,
        issuer=oidc_server.issuer,
        clock=clock,
    )
    yield checker
    await checker.aclose()


def introspections(server: AuthorizationServer, before: list[str]) -> int:
    return _served_since(server, before).count("POST /token/introspection")


async def test_an_opaque_token_is_introspected_and_accepted_with_its_client_and_scopes(
    oidc_server: AuthorizationServer, introspection: IntrospectionVerifier
) -> None:
    token = await oidc_server.client_credentials_token(OPAQUE_RESOURCE, scope="gguf:generate")
    assert token.count(".") == 0  # opaque indeed

    verified = await introspection.verify_token(token)

    assert verified is not None
    assert (verified.client_id, verified.scopes, verified.resource) == ("machine", ["gguf:generate"], OPAQUE_RESOURCE)
    assert verified.claims is not None and verified.claims["iss"] == oidc_server.issuer
    assert verified.token == "[redacted]" and token not in repr(verified)


async def test_an_introspection_answer_is_reused_briefly_so_a_revoked_token_ends_within_the_cache_time(
    oidc_server: AuthorizationServer, introspection: IntrospectionVerifier, clock: FakeClock
) -> None:
    token = await oidc_server.client_credentials_token(OPAQUE_RESOURCE)
    before = oidc_server.requests()
    assert await introspection.verify_token(token) is not None
    assert await introspection.verify_token(token) is not None
    assert introspections(oidc_server, before) == 1

    async with httpx.AsyncClient() as http:
        revoked = await http.post(
            oidc_server.metadata_endpoint("revocation_endpoint"),
            data={"token": token},
            auth=(oidc_server.machine.client_id, oidc_server.machine.client_secret),
        )
    assert revoked.status_code == 200
    assert await introspection.verify_token(token) is not None  # the answer kept
    clock.advance(CACHE_S)
    assert await introspection.verify_token(token) is None


async def test_an_opaque_token_for_another_resource_or_unknown_is_refused(
    oidc_server: AuthorizationServer, introspection: IntrospectionVerifier, logs: pytest.LogCaptureFixture
) -> None:
    oidc_server.issue_for(OTHER_RESOURCE + "/opaque", format="opaque")
    elsewhere = await oidc_server.client_credentials_token(OTHER_RESOURCE + "/opaque")

    assert await introspection.verify_token(elsewhere) is None
    assert await introspection.verify_token("no-such-token") is None

    assert "is not this server" in refusals(logs)[0]
    assert "not active" in refusals(logs)[1]


def answering(answer: dict[str, Any]) -> httpx2.AsyncClient:
    """An introspection endpoint answering `answer`: what another vendor's server says, which
    oidc-provider never does (Keycloak's token_type for a refresh token, another realm's iss)."""
    return httpx2.AsyncClient(transport=httpx2.MockTransport(lambda request: httpx2.Response(200, json=answer)))


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"token_type": "Refresh"}, "it is a 'Refresh' token, not a bearer access token"),
        ({"iss": "http://127.0.0.1:1/realms/other"}, "issued by 'http://127.0.0.1:1/realms/other'"),
        ({"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}, "bound to a key"),
        ({"exp": 1}, "it has expired"),
    ],
    ids=["refresh-token", "other-issuer", "dpop-bound", "expired"],
)
async def test_an_introspection_answer_that_is_not_for_a_bearer_access_token_here_is_refused(
    logs: pytest.LogCaptureFixture, answer: dict[str, Any], reason: str
) -> None:
    issuer = "http://127.0.0.1:1/realms/ours"
    base = {"active": True, "aud": OPAQUE_RESOURCE, "client_id": "app", "iss": issuer, "token_type": "Bearer"}
    for shown_answer, accepted in ((base, True), ({**base, **answer}, False)):
        async with answering(shown_answer) as http:
            checker = IntrospectionVerifier(
                "http://127.0.0.1:1/introspect", "rs", SecretStr("s"), OPAQUE_RESOURCE, issuer=issuer, http=http
            )
            assert (await checker.verify_token("opaque") is not None) is accepted
    assert [m for m in refusals(logs) if reason in m], refusals(logs)


async def test_introspection_with_rejected_credentials_refuses_tokens_and_says_which_client(
    oidc_server: AuthorizationServer, logs: pytest.LogCaptureFixture
) -> None:
    url = oidc_server.metadata_endpoint("introspection_endpoint")
    checker = IntrospectionVerifier(url, "gguf-mcp", SecretStr("wrong-secret-canary"), OPAQUE_RESOURCE)
    try:
        for _ in range(5):
            assert await checker.verify_token("any-token") is None
    finally:
        await checker.aclose()
    (warning,) = warnings_of(logs)
    assert url in warning and "refused gguf-mcp's own client credentials" in warning
    assert "'gguf-mcp'" in warning and "wrong-secret-canary" not in logs.text
    assert issuer_outage.get() == url


# --- Named clients and the composite verifier ----------------------------------------------------------------

ALICE_TOKEN = "alice-canary-token-3f9d1c0b7e2a4f68a1d3"
BOB_TOKEN = "bob-canary-token-8e7d6c5b4a39281706f5"
ALICE = Client("alice", token_sha256=hash_token(ALICE_TOKEN), policy=ClientPolicy(scopes=frozenset({"gguf:models"})))
BOB = Client("bob", token_sha256=hash_token(BOB_TOKEN).upper())
CI = Client("ci", oauth_client_id="machine", policy=ClientPolicy(tools=frozenset({"chat"}), max_concurrent=2))
HUMANS = Client("humans", oauth_subject="bob", policy=ClientPolicy(max_tokens=256))
DEFAULTS = ClientPolicy(scopes=frozenset({"gguf:models"}), max_concurrent=1)


def directory(*clients: Client) -> ClientDirectory:
    return ClientDirectory.build({c.name: c for c in clients}, DEFAULTS)


async def test_a_named_clients_token_is_that_client_with_its_scopes() -> None:
    identity = IdentityVerifier(directory(ALICE, BOB))

    alice = await identity.verify_token(ALICE_TOKEN)
    bob = await identity.verify_token(BOB_TOKEN)

    assert alice is not None and bob is not None
    assert (alice.client_id, alice.scopes, alice.caller) == ("alice", ["gguf:models"], Caller("alice", ALICE.policy))
    assert (bob.client_id, bob.scopes) == ("bob", sorted(USE_SCOPES))  # the digest's case does not matter
    assert alice.token == "[redacted]" and ALICE_TOKEN not in repr(alice)
    assert caller_of(alice, identity.directory) == Caller("alice", ALICE.policy)


async def test_a_wrong_token_is_nobody() -> None:
    identity = IdentityVerifier(directory(ALICE))
    assert await identity.verify_token(ALICE_TOKEN + "x") is None
    assert await identity.verify_token("") is None


async def test_swapping_the_directory_revokes_a_client_and_leaves_the_others_alone() -> None:
    identity = IdentityVerifier(directory(ALICE, BOB))
    bob_before = await identity.verify_token(BOB_TOKEN)
    assert bob_before is not None

    identity.directory = directory(BOB)  # a reload without alice's table

    assert await identity.verify_token(ALICE_TOKEN) is None
    bob_after = await identity.verify_token(BOB_TOKEN)
    assert bob_after is not None and bob_after.caller == bob_before.caller
    assert caller_of(bob_before, identity.directory) == Caller("bob", BOB.policy)  # a request in flight keeps its own


async def test_the_auth_token_is_the_client_default() -> None:
    """The configuration makes GGUF_MCP_AUTH_TOKEN the table `default` (config/policies.py)."""
    default = Client(DEFAULT_CLIENT, hash_token("static-canary-token"), policy=ClientPolicy(scopes=frozenset(SCOPES)))
    verified = await IdentityVerifier(directory(default, ALICE)).verify_token("static-canary-token")
    assert verified is not None
    assert (verified.client_id, verified.scopes) == (DEFAULT_CLIENT, sorted(SCOPES))


def test_no_bearer_at_all_is_the_default_client() -> None:
    assert caller_of(None, directory()) == Caller(DEFAULT_CLIENT, ClientPolicy(scopes=frozenset(SCOPES)))
    table = Client(DEFAULT_CLIENT, policy=ClientPolicy(max_concurrent=3))
    assert caller_of(None, directory(table)) == Caller(DEFAULT_CLIENT, table.policy)


async def test_an_oauth_client_gets_the_table_naming_it_else_the_defaults(
    oidc_server: AuthorizationServer, verifier: JWTVerifier
) -> None:
    identity = IdentityVerifier(directory(ALICE, CI, HUMANS), verifier)
    machine = await identity.verify_token(await oidc_server.client_credentials_token(RESOURCE))
    client_id, bobs = await oidc_server.authorization_code_token(RESOURCE, user="bob")
    _, carols = await oidc_server.authorization_code_token(RESOURCE, user="carol")

    by_bob = await identity.verify_token(bobs)
    by_carol = await identity.verify_token(carols)

    assert machine is not None and machine.caller == Caller("ci", CI.policy)
    assert by_bob is not None and by_bob.caller == Caller("humans", HUMANS.policy)
    assert by_carol is not None and by_carol.caller == Caller(by_carol.client_id, DEFAULTS, configured=False)
    assert by_bob.client_id == client_id and by_bob.subject == "bob"  # the principal stays the OAuth one
    assert await identity.verify_token(ALICE_TOKEN) is not None  # named clients and OAuth on one server


async def test_an_oauth_callers_scopes_are_those_granted_that_its_policy_allows(
    oidc_server: AuthorizationServer, verifier: JWTVerifier
) -> None:
    """The token may carry more than the table allows (metrics), and less (no embed)."""
    table = Client(
        "ci", oauth_client_id="machine", policy=ClientPolicy(scopes=frozenset({"gguf:models", "gguf:embed"}))
    )
    identity = IdentityVerifier(directory(table), verifier)
    token = await oidc_server.client_credentials_token(RESOURCE, scope="gguf:models gguf:metrics")

    verified = await identity.verify_token(token)

    assert verified is not None
    assert verified.scopes == ["gguf:models"] and verified.caller.policy.scopes == {"gguf:models"}
    assert verified.caller.policy.allows_tool("list_models") and not verified.caller.policy.allows_tool("embed")


async def test_a_users_table_wins_over_their_apps_table(
    oidc_server: AuthorizationServer, verifier: JWTVerifier
) -> None:
    client_id, token = await oidc_server.authorization_code_token(RESOURCE, user="bob")
    app = Client("app", oauth_client_id=client_id)
    identity = IdentityVerifier(directory(app, HUMANS), verifier)

    verified = await identity.verify_token(token)

    assert verified is not None and verified.caller.name == "humans"
    identity.directory = directory(app)
    again = await identity.verify_token(token)
    assert again is not None and again.caller.name == "app"


async def test_the_official_clients_oauth_flow_reaches_a_tool_as_its_caller(oidc_server: AuthorizationServer) -> None:
    """The SDK's own server and client around this verifier: a 401 pointing at the protected resource
    metadata, discovery, dynamic registration, authorization code with PKCE and `resource`, consent
    (headless), then a tool that finds its caller (gguf-mcp's HTTP app wires the same pieces)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    public = f"http://127.0.0.1:{listener.getsockname()[1]}/mcp"
    dana = Client("dana", oauth_subject="dana", policy=ClientPolicy(scopes=frozenset({"gguf:models", "gguf:embed"})))
    identity = IdentityVerifier(directory(dana), JWTVerifier(oidc_server.issuer, public))
    auth = AuthSettings(issuer_url=oidc_server.issuer, resource_server_url=public, validate_token_resource=False)  # type: ignore[arg-type]
    server = MCPServer("identity-test", token_verifier=identity, auth=auth)

    @server.tool()
    def whoami() -> str:
        caller = caller_of(get_access_token(), identity.directory)
        return f"{caller.name} {' '.join(sorted(caller.policy.scopes))}"

    uv = uvicorn.Server(uvicorn.Config(server.streamable_http_app(), log_level="warning"))
    redirect, callback = oidc_server.browser(user="dana")
    metadata = OAuthClientMetadata(redirect_uris=[AnyUrl("http://127.0.0.1:9/callback")])
    storage = MemoryStorage()
    oauth = OAuthClientProvider(public, metadata, storage, redirect, callback)
    async with anyio.create_task_group() as group:
        group.start_soon(uv.serve, [listener])
        try:
            async with (
                httpx2.AsyncClient(auth=oauth) as http,
                MCPClient(streamable_http_client(public, http_client=http)) as client,
            ):
                result = await client.call_tool("whoami", {})
        finally:
            uv.should_exit = True
    await identity.aclose()

    assert storage.tokens is not None
    granted = claims_of(storage.tokens.access_token)
    assert (granted["aud"], granted["sub"]) == (public, "dana")
    allowed = sorted(set(granted["scope"].split()) & dana.policy.scopes)
    assert allowed  # something in common, or the tool would have nothing to show
    assert result.content[0].type == "text"
    assert result.content[0].text == f"dana {' '.join(allowed)}"


async def test_a_named_token_never_reaches_the_authorization_server(
    oidc_server: AuthorizationServer, introspection: IntrospectionVerifier
) -> None:
    identity = IdentityVerifier(directory(ALICE), introspection)
    before = oidc_server.requests()
    assert await identity.verify_token(ALICE_TOKEN) is not None
    assert introspections(oidc_server, before) == 0
    assert await identity.verify_token("someone-elses-token") is None
    assert introspections(oidc_server, before) == 1


async def test_no_token_reaches_the_logs(
    oidc_server: AuthorizationServer, verifier: JWTVerifier, logs: pytest.LogCaptureFixture
) -> None:
    good = await oidc_server.client_credentials_token(RESOURCE)
    forged = REFUSALS["tampered payload"][0](oidc_server)
    identity = IdentityVerifier(directory(ALICE), verifier)
    for token in (good, forged, ALICE_TOKEN, ALICE_TOKEN[:-1]):
        await identity.verify_token(token)
    assert refusals(logs)  # something was logged
    for token in (good, forged, ALICE_TOKEN):
        for part in token.split("."):
            assert part not in logs.text
