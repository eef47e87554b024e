"""A real authorization server for the identity tests: node-oidc-provider on loopback.

`oidc-provider` (npm, OpenID Certified) runs `tests/support/oidc_server.mjs` under the pinned
Node of `tests/support/node_tools.py`, installed once into the suite's cache. It offers what an
MCP deployment's identity provider does: discovery (OpenID, and RFC 8414), dynamic client
registration, authorization code with PKCE, resource indicators (RFC 8707) giving JWT access
tokens (RFC 9068) whose audience is the resource, client credentials, introspection (RFC 7662)
and revocation. Login and consent are its development forms, which `authorize` fills in over
HTTP the way a browser would.

The test holds the server's signing keys (it generates them), so it can mint tokens the real
issuer's keys sign but the server would never issue (expired, another `iss`, ...), and keys of
its own for an unknown `kid`.

Its keys (`keys`): `rs-1` (RSA, its JWK naming no algorithm: RS256 and PS256 tokens), `ec-1`
(P-256, ES256) and `rs-pinned` (RSA, its JWK naming RS256 only).

- `oidc_server` (session fixture): one server, issuer without a path, RFC 8414 metadata too.
- `start_oidc_server(issuer_path=..., rfc8414=...)`: a context manager for one of its own.

What a test does with one (`AuthorizationServer`):
- `await client_credentials_token(resource, scope)`: a machine client's token (JWT, aud = resource);
- `issue_for(resource, format="opaque" | "jwt", alg=..., ttl=...)`: how tokens for a resource look;
- `await register(redirect_uri)`: dynamic client registration; `await authorize(url, user)`: a
  browser's part of the authorization code flow; `browser(user)`: the same as the official
  client's redirect and callback handlers; `await authorization_code_token(resource, user)`: all of it;
- `mint(resource, key=..., headers=..., **claims)`: a token signed with its key (or another);
- `requests()`: what it has served; `fail(path, status)`: make one of its routes fail.

Forgeries every verifier must refuse (`unsigned`, `hs256_with_public_key`, `tampered`) and the
official client's token storage (`MemoryStorage`) are here too, for the unit and end-to-end tests.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import selectors
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthToken

from tests.support.node_tools import ensure_node_tools, ensure_npm_packages

OIDC_PROVIDER_VERSION = "9.13.3"
"""The newest release on 2026-11-25 (npm ``--before`` of node_tools resolves its dependencies)."""
SCRIPT = Path(__file__).with_name("oidc_server.mjs")
START_TIMEOUT_S = 30.0
SCOPES = "gguf:models gguf:generate gguf:embed gguf:metrics"
RedirectHandler = Callable[[str], Awaitable[None]]
CallbackHandler = Callable[[], Awaitable[AuthorizationCodeResult]]


@dataclass(frozen=True)
class Credentials:
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class SigningKey:
    """A private key with its `kid` and algorithm; the server's own, or one only the test has."""

    kid: str
    algorithm: str
    private: Any
    pinned: bool = False
    """Whether its JWK names its algorithm (`alg`), binding it to that one."""

    def jwk(self) -> dict[str, Any]:
        codec = RSAAlgorithm if self.algorithm.startswith(("RS", "PS")) else ECAlgorithm
        jwk = {**codec.to_jwk(self.private, as_dict=True), "kid": self.kid, "use": "sig"}
        return {**jwk, "alg": self.algorithm} if self.pinned else jwk

    def sign(self, claims: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> str:
        header = {"kid": self.kid, "typ": "at+jwt", **(headers or {})}
        return jwt.encode(dict(claims), self.private, algorithm=self.algorithm, headers=header)


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


class _Forms(HTMLParser):
    """The first form of a page: its action and its hidden inputs (what a browser would submit)."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = attributes.get("action")
        elif tag == "input" and attributes.get("type") == "hidden" and attributes.get("name"):
            self.fields[str(attributes["name"])] = attributes.get("value") or ""


@dataclass
class AuthorizationServer:
    """A running oidc-provider; its clients, its keys, and helpers that act as its users do."""

    issuer: str
    keys: tuple[SigningKey, ...]
    machine: Credentials
    """A confidential client allowed the client-credentials grant (a machine-to-machine agent)."""
    resource_server: Credentials
    """The credentials gguf-mcp would hold, for introspection."""
    process: subprocess.Popen[bytes]
    log: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    """Its OpenID discovery document."""

    @property
    def key(self) -> SigningKey:
        """The key the server signs RS256 (and PS256) access tokens with; its JWK names no `alg`."""
        return self.keys[0]

    def url(self, path: str) -> str:
        return urljoin(self.issuer + "/", path.lstrip("/"))

    @property
    def origin(self) -> str:
        return "{0.scheme}://{0.netloc}".format(urlsplit(self.issuer))

    def requests(self) -> list[str]:
        """Every request the server has served, as "GET /path" (the test routes excepted)."""
        return list(httpx.get(f"{self.origin}/_test/requests").json())

    def _test_route(self, route: str, body: Mapping[str, Any]) -> None:
        httpx.post(f"{self.origin}/_test/{route}", json=dict(body)).raise_for_status()

    def fail(self, path: str, status: int) -> None:
        """Answer `status` at `path` (e.g. "/jwks") from now on; 0 answers normally again."""
        self._test_route("faults", {"path": path, "status": status})

    def issue_for(self, resource: str, *, format: str = "jwt", alg: str = "RS256", ttl: int = 300) -> None:
        """How the server issues tokens for `resource` from now on: JWT or opaque, signed with `alg`."""
        self._test_route("resources", {"resource": resource, "format": format, "alg": alg, "ttl": ttl})

    async def client_credentials_token(
        self, resource: str, scope: str = SCOPES, client: Credentials | None = None
    ) -> str:
        """An access token for `resource` by the client-credentials grant (RFC 6749 4.4, RFC 8707)."""
        client = client or self.machine
        async with httpx.AsyncClient() as http:
            response = await http.post(
                self.metadata_endpoint("token_endpoint"),
                data={"grant_type": "client_credentials", "resource": resource, "scope": scope},
                auth=(client.client_id, client.client_secret),
            )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def metadata_endpoint(self, name: str) -> str:
        return str(self.metadata[name])

    async def register(self, redirect_uri: str, **metadata: Any) -> dict[str, Any]:
        """Dynamic client registration (RFC 7591): a public client using the authorization code with PKCE."""
        body = {
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            **metadata,
        }
        async with httpx.AsyncClient() as http:
            response = await http.post(self.metadata_endpoint("registration_endpoint"), json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def authorize(self, authorization_url: str, user: str = "alice") -> AuthorizationCodeResult:
        """Follow `authorization_url` as a browser would: sign in as `user`, consent, and return
        what the server sends to the client's redirect URI (which is never fetched)."""
        async with httpx.AsyncClient() as browser:
            response = await browser.get(authorization_url)
            for _ in range(10):
                if response.is_redirect:
                    location = urljoin(str(response.url), response.headers["location"])
                    query = parse_qs(urlsplit(location).query)
                    if "code" in query or "error" in query:
                        assert "error" not in query, f"the server refused: {query}"
                        return AuthorizationCodeResult(
                            code=query["code"][0], state=_one(query, "state"), iss=_one(query, "iss")
                        )
                    response = await browser.get(location)
                    continue
                assert response.status_code == 200, f"{response.status_code} at {response.url}: {response.text[:500]}"
                form = _Forms()
                form.feed(response.text)
                assert form.action, f"no form at {response.url}: {response.text[:500]}"
                answers = {"login": user, "password": "any"} if form.fields.get("prompt") == "login" else {}
                response = await browser.post(urljoin(str(response.url), form.action), data={**form.fields, **answers})
        raise AssertionError("the authorization flow did not reach the redirect URI in 10 steps")

    def browser(self, user: str = "alice") -> tuple[RedirectHandler, CallbackHandler]:
        """The official client's `redirect_handler` and `callback_handler` (`OAuthClientProvider`):
        `user` signs in and consents, over HTTP, where the client sends them."""
        pending: list[str] = []

        async def redirect(url: str) -> None:
            pending.append(url)

        async def callback() -> AuthorizationCodeResult:
            return await self.authorize(pending.pop(), user)

        return redirect, callback

    async def authorization_code_token(
        self, resource: str, user: str = "alice", scope: str = SCOPES
    ) -> tuple[str, str]:
        """Register a client, run the authorization code flow with PKCE for `resource` as `user`:
        (its client_id, the access token)."""
        redirect_uri = "http://127.0.0.1:9/callback"
        client = await self.register(redirect_uri)
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = {
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": redirect_uri,
            "scope": scope,
            "resource": resource,
            "state": secrets.token_urlsafe(16),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        code = await self.authorize(f"{self.metadata_endpoint('authorization_endpoint')}?{urlencode(query)}", user)
        assert code.state == query["state"] and code.iss == self.issuer
        async with httpx.AsyncClient() as http:
            response = await http.post(
                self.metadata_endpoint("token_endpoint"),
                data={
                    "grant_type": "authorization_code",
                    "code": code.code,
                    "redirect_uri": redirect_uri,
                    "code_verifier": verifier,
                    "client_id": client["client_id"],
                    "resource": resource,
                },
            )
        assert response.status_code == 200, response.text
        return str(client["client_id"]), str(response.json()["access_token"])

    def mint(
        self, resource: str, *, key: SigningKey | None = None, headers: Mapping[str, Any] | None = None, **claims: Any
    ) -> str:
        """A token signed with the server's own key (or `key`), with the claims a client-credentials
        token of the machine client has, `claims` overriding them (None removes one)."""
        now = int(time.time())
        base = {
            "iss": self.issuer,
            "aud": resource,
            "sub": self.machine.client_id,
            "client_id": self.machine.client_id,
            "scope": SCOPES,
            "iat": now,
            "exp": now + 300,
            "jti": secrets.token_hex(8),
        }
        merged = {name: value for name, value in {**base, **claims}.items() if value is not None}
        return (key or self.key).sign(merged, headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A JWT with any header (`alg: none`, ...) and `signature` as given."""
    return ".".join((b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)))


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def hs256_with_public_key(server: AuthorizationServer, resource: str) -> str:
    """The classic confusion: HMAC keyed with the issuer's public key, which anyone can fetch."""
    pem = server.key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": server.key.kid}
    signing_input = unsigned(header, claims_of(server.mint(resource))).rsplit(".", 1)[0]
    return signing_input + "." + b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())


def tampered(server: AuthorizationServer, resource: str) -> str:
    """A genuine token whose payload gained a scope; the signature is the original one."""
    header, payload, signature = server.mint(resource, scope="gguf:models").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "gguf:models gguf:metrics"
    return ".".join((header, b64(json.dumps(claims).encode()), signature))


class MemoryStorage:
    """The official client's token storage, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def _one(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def oidc_provider_module() -> Path:
    modules = ensure_npm_packages("oidc-provider", {"oidc-provider": OIDC_PROVIDER_VERSION})
    return modules / "oidc-provider" / "lib" / "index.js"


@contextlib.contextmanager
def start_oidc_server(issuer_path: str = "", *, rfc8414: bool = True) -> Iterator[AuthorizationServer]:
    """Start an oidc-provider on 127.0.0.1 (a free port), yield it, stop it."""
    node = ensure_node_tools().node
    pinned = rsa_key("rs-pinned")
    keys = (rsa_key("rs-1"), ec_key("ec-1"), SigningKey(pinned.kid, pinned.algorithm, pinned.private, pinned=True))
    machine = Credentials("machine", secrets.token_urlsafe(24))
    resource_server = Credentials("gguf-mcp", secrets.token_urlsafe(24))
    confidential: dict[str, list[str]] = {"grant_types": [], "redirect_uris": [], "response_types": []}
    config = {
        "module": str(oidc_provider_module()),
        "issuerPath": issuer_path,
        "rfc8414": rfc8414,
        "jwks": {"keys": [key.jwk() for key in keys]},
        "cookieKeys": [secrets.token_hex(16)],
        "clients": [
            {
                **confidential,
                "client_id": machine.client_id,
                "client_secret": machine.client_secret,
                "grant_types": ["client_credentials"],
            },
            {**confidential, "client_id": resource_server.client_id, "client_secret": resource_server.client_secret},
        ],
    }
    with tempfile.TemporaryDirectory(prefix="oidc-") as scratch:
        config_file = Path(scratch) / "config.json"
        config_file.write_text(json.dumps(config))
        log = Path(scratch) / "oidc.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [str(node), str(SCRIPT), str(config_file)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
            )
        try:
            issuer = _read_issuer(process, log)
            metadata = httpx.get(f"{issuer}/.well-known/openid-configuration").json()
            yield AuthorizationServer(issuer, keys, machine, resource_server, process, log, metadata)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def _read_issuer(process: subprocess.Popen[bytes], log: Path) -> str:
    """The issuer the server printed once listening (its first stdout line)."""
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"oidc-provider did not start within {START_TIMEOUT_S} s: {log.read_text()[-2000:]}")
            chunk = process.stdout.read1(4096)  # type: ignore[attr-defined]
            if not chunk:
                raise RuntimeError(f"oidc-provider exited ({process.wait()}): {log.read_text()[-2000:]}")
            line += chunk
    return str(json.loads(line)["issuer"])


@pytest.fixture(scope="session")
def oidc_server() -> Iterator[AuthorizationServer]:
    """One oidc-provider for the session: issuer http://127.0.0.1:<port>, RFC 8414 metadata served."""
    with start_oidc_server() as server:
        yield server
