"""The authorization server's signing keys: found through its metadata, cached, refreshed sparingly.

Discovery follows RFC 8414 and OpenID Connect Discovery in the order the MCP authorization spec
gives (an issuer with a path has its path after the well-known segment first, then appended),
and takes the first document whose `issuer` is exactly the configured one (RFC 8414 section
3.3: a document naming another issuer is refused, never followed). Its `jwks_uri` gives the keys.

Fetching is rare and never on a flood's behalf: the keys are fetched once, refreshed in line
when older than `MAX_AGE_S` (by one request; the others use the current keys meanwhile), and an
unknown `kid` refreshes them at most once per `REFRESH_INTERVAL_S` however many tokens carry one.
While the issuer is unreachable the keys already held keep verifying; with none held, a token is
refused (`IssuerUnavailable`) and the fetch retried at most every `RETRY_S`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
from jwt import PyJWK, PyJWKError, PyJWTError

from gguf_mcp.identity.remote import Clock, IssuerHTTP, IssuerUnavailable, OutageLog, fetch_json

REFRESH_INTERVAL_S = 60.0
"""At most one fetch per minute for unknown `kid`s (and after a failed refresh)."""
RETRY_S = 10.0
"""An issuer that never answered is asked again at most this often."""
MAX_AGE_S = 600.0
"""Keys older than this are fetched again, so a key the issuer withdrew stops being trusted."""

ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
"""The signature algorithms accepted: asymmetric only, so `none` and HMAC (which a forger would key
with the issuer's public key) are never tried. Whether a key fits an algorithm (type, curve, the
key's own `alg`) is PyJWT's to check."""

JWK = Mapping[str, Any]


class UnknownKey(Exception):
    """No key of the issuer matches the token's `kid` and algorithm."""


def metadata_urls(issuer: str) -> list[str]:
    """Where the issuer's metadata may be, in the order the MCP authorization spec tries them."""
    scheme, host, path, _, _ = urlsplit(issuer)
    path = path.rstrip("/")

    def at(well_known_path: str) -> str:
        return urlunsplit((scheme, host, well_known_path, "", ""))

    if not path:
        return [at("/.well-known/oauth-authorization-server"), at("/.well-known/openid-configuration")]
    return [
        at(f"/.well-known/oauth-authorization-server{path}"),  # RFC 8414 section 3.1
        at(f"/.well-known/openid-configuration{path}"),  # RFC 8414 section 5, for OpenID providers
        at(f"{path}/.well-known/openid-configuration"),  # OpenID Connect Discovery 1.0
    ]


async def discover(issuer_http: IssuerHTTP, issuer: str) -> Mapping[str, Any]:
    """The issuer's metadata document (RFC 8414 or OpenID), checked to be the issuer's own."""
    tried = []
    for url in metadata_urls(issuer):
        status, document = await fetch_json(issuer_http.client, url)
        if document is None:
            tried.append(f"{url} (HTTP {status})")
            continue
        if not isinstance(document, dict) or document.get("issuer") != issuer:
            named = document.get("issuer") if isinstance(document, dict) else None
            raise IssuerUnavailable(
                f"the metadata at {url} names issuer {named!r}, not {issuer!r}: set the issuer exactly as the "
                "authorization server spells it (a trailing slash counts)"
            )
        return document
    raise IssuerUnavailable(f"no authorization server metadata found at {', '.join(tried)}")


def signing_keys(document: Any, url: str) -> dict[str | None, JWK]:
    """The verification keys of a JWKS by `kid`: asymmetric, meant for signatures."""
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise IssuerUnavailable(f"{url} is not a JWK Set (no 'keys' list)")
    usable = {_kid(key): key for key in keys if _verifies(key)}
    if not usable:
        raise IssuerUnavailable(f"the JWK Set at {url} holds no signature key (RSA, EC or OKP)")
    return usable


def _verifies(key: object) -> bool:
    # `key_ops` is not read: issuers publish ["sign"] on public keys.
    return isinstance(key, dict) and key.get("kty") in ("RSA", "EC", "OKP") and key.get("use", "sig") == "sig"


def _kid(key: JWK) -> str | None:
    kid = key.get("kid")
    return kid if isinstance(kid, str) else None


class SigningKeys:
    """One issuer's signature keys, fetched through its metadata (see the module docstring)."""

    def __init__(self, issuer: str, issuer_http: IssuerHTTP, *, clock: Clock = time.monotonic) -> None:
        self.issuer = issuer
        self._http = issuer_http
        self._clock = clock
        self._lock = anyio.Lock()
        self._outage = OutageLog(issuer, clock)
        self._jwks_uri: str | None = None
        self._keys: dict[str | None, JWK] = {}
        self._prepared: dict[tuple[str | None, str], PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._failure: IssuerUnavailable | None = None

    async def key_for(self, kid: str | None, algorithm: str) -> PyJWK:
        """The key that verifies a token with this header; `UnknownKey` or `IssuerUnavailable` else."""
        if self._stale() and not self._lock.locked():
            await self._refresh(self._stale)
        key = self._lookup(kid, algorithm)
        if key is None:
            await self._refresh(self._may_refetch)
            key = self._lookup(kid, algorithm)
        if key is not None:
            return key
        if self._failure is not None:  # the issuer could not be asked: the token may be fine
            raise self._failure
        raise UnknownKey(f"no key with kid {kid!r} for {algorithm} among the issuer's keys")

    def _since(self, instant: float | None) -> float:
        return float("inf") if instant is None else self._clock() - instant

    def _stale(self) -> bool:
        """Never fetched (retried every RETRY_S), or older than MAX_AGE_S (retried every minute)."""
        if not self._keys:
            return self._since(self._attempted_at) >= RETRY_S
        return self._since(self._fetched_at) >= MAX_AGE_S and self._may_refetch()

    def _may_refetch(self) -> bool:
        return self._since(self._attempted_at) >= (REFRESH_INTERVAL_S if self._keys else RETRY_S)

    async def _refresh(self, due: Callable[[], bool]) -> None:
        async with self._lock:
            if not due():  # another request fetched while this one waited
                return
            self._attempted_at = self._clock()
            try:
                self._jwks_uri = self._jwks_uri or await self._find_jwks_uri()
                status, document = await fetch_json(self._http.client, self._jwks_uri)
                if document is None:
                    raise IssuerUnavailable(f"{self._jwks_uri} answered HTTP {status}")
                self._keys = signing_keys(document, self._jwks_uri)
            except IssuerUnavailable as error:
                self._jwks_uri = None  # it may have moved: ask the metadata again next time
                self._failure = error
                consequence = "keeping the keys fetched before" if self._keys else "refusing every access token"
                self._outage.failed(error, consequence)
                return
            self._prepared.clear()
            self._fetched_at = self._attempted_at
            self._failure = None
            self._outage.answered()

    async def _find_jwks_uri(self) -> str:
        document = await discover(self._http, self.issuer)
        uri = document.get("jwks_uri")
        if not isinstance(uri, str) or urlsplit(uri).scheme not in ("https", "http"):
            raise IssuerUnavailable(f"the metadata of {self.issuer} names no jwks_uri")
        return uri

    def _lookup(self, kid: str | None, algorithm: str) -> PyJWK | None:
        prepared = self._prepared.get((kid, algorithm))
        key = self._keys.get(kid)  # a token without kid finds only a key without one
        if prepared is None and key is not None:
            try:
                # A key naming its algorithm keeps it (RFC 8725 section 3.1: one algorithm per key).
                prepared = self._prepared[(kid, algorithm)] = PyJWK(dict(key), None if "alg" in key else algorithm)
            except (PyJWKError, PyJWTError):
                return None
        return prepared
