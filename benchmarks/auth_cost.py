"""What each credential check costs per call, through the whole HTTP stack, and what a cold JWKS fetch costs.

gguf-mcp processes on the instant upstream, each `chat` call a plain 2026-07-28 POST on one
kept-alive connection (the bearer is checked on every request), the kinds interleaved round by
round so a noisy neighbour hits them alike:

- `none`: a server without credentials (loopback only), the floor;
- `static` (GGUF_MCP_AUTH_TOKEN), `named` (a `[clients.<name>]` token) and `jwt` (an access
  token of a real oidc-provider, RS256) on one server that accepts all three;
- `introspection`: opaque tokens of the same provider, introspected (RFC 7662) on another server;
  the answer is reused for 60 s, so this is the cached path; the first call pays one round trip.

Reported per kind: the client's median time per call and the server's CPU per call (from /proc),
and each one's difference from `none`. Then, in process, what the check itself costs (the SDK's
`verify_token` on gguf-mcp's `IdentityVerifier`, keys and introspection answers cached), and the
cold start of the JWT check: a fresh verifier's first token (discovery, then the JWKS, over
loopback) against the same call once the keys are cached.

    .venv/bin/python -m benchmarks.auth_cost [--calls 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
from pydantic import SecretStr

from benchmarks.common import cpu_seconds, instant_upstream
from gguf_mcp.clients import DEFAULT_CLIENT, Client, ClientPolicy, hash_token
from gguf_mcp.identity import ClientDirectory, IdentityVerifier, IntrospectionVerifier, JWTVerifier
from tests.support.bridge import ServerProcess, base_env, free_port, gguf_mcp_argv, serving
from tests.support.oidc import AuthorizationServer, start_oidc_server

KEY = "bench-key-0000"
STATIC = "bench-static-token-0123456789abcdef0123"
NAMED = "bench-named-token-0123456789abcdef01234"
CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {
        "name": "chat",
        "arguments": {"messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 8},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    },
}
HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2026-07-28",
    "mcp-method": "tools/call",
    "mcp-name": "chat",
}


def public(port: int) -> list[str]:
    return gguf_mcp_argv(port, "--public-url", f"http://127.0.0.1:{port}/mcp")


def calls(server: ServerProcess, token: str | None, count: int) -> tuple[float, float]:
    """`count` calls on one connection: (median seconds per call, server CPU seconds per call)."""
    headers = HEADERS | ({"authorization": f"Bearer {token}"} if token else {})
    times = []
    with httpx.Client(timeout=30) as http:
        http.post(server.url, json=CALL, headers=headers).raise_for_status()  # warm: connection, caches
        before = cpu_seconds(server.process.pid)
        for _ in range(count):
            began = time.perf_counter()
            answer = http.post(server.url, json=CALL, headers=headers)
            times.append(time.perf_counter() - began)
            answer.raise_for_status()
            assert '"isError":false' in answer.text.replace(" ", ""), answer.text[:300]
        spent = cpu_seconds(server.process.pid) - before
    return statistics.median(times), spent / count


async def checks(issuer: AuthorizationServer, resource: str, opaque_resource: str, count: int) -> dict[str, float]:
    """Seconds per `verify_token` of each kind, in process, after one warm-up call each."""
    clients = {
        DEFAULT_CLIENT: Client(DEFAULT_CLIENT, hash_token(STATIC)),
        "bench": Client("bench", hash_token(NAMED), policy=ClientPolicy()),
    }
    directory = ClientDirectory.build(clients, ClientPolicy())
    jwt_verifier = JWTVerifier(issuer.issuer, resource)
    introspection = IntrospectionVerifier(
        issuer.metadata_endpoint("introspection_endpoint"),
        issuer.resource_server.client_id,
        SecretStr(issuer.resource_server.client_secret),
        opaque_resource,
        issuer=issuer.issuer,
    )
    tokens = {
        "static": (IdentityVerifier(directory), STATIC),
        "named": (IdentityVerifier(directory), NAMED),
        "jwt": (IdentityVerifier(directory, jwt_verifier), await issuer.client_credentials_token(resource)),
        "introspection": (
            IdentityVerifier(directory, introspection),
            await issuer.client_credentials_token(opaque_resource),
        ),
    }
    spent = {}
    try:
        for kind, (verifier, token) in tokens.items():
            assert await verifier.verify_token(token) is not None, kind
            began = time.perf_counter()
            for _ in range(count):
                await verifier.verify_token(token)
            spent[kind] = (time.perf_counter() - began) / count
    finally:
        await jwt_verifier.aclose()
        await introspection.aclose()
    return spent


async def cold_and_warm(issuer: AuthorizationServer, resource: str, tries: int) -> tuple[list[float], list[float]]:
    """Seconds for one verification on a fresh verifier (discovery + JWKS), and on a warm one."""
    token = issuer.mint(resource)
    cold, warm = [], []
    for _ in range(tries):
        verifier = JWTVerifier(issuer.issuer, resource)
        try:
            began = time.perf_counter()
            assert await verifier.verify_token(token) is not None
            cold.append(time.perf_counter() - began)
            began = time.perf_counter()
            assert await verifier.verify_token(token) is not None
            warm.append(time.perf_counter() - began)
        finally:
            await verifier.aclose()
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per kind per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cold", type=int, default=20, help="fresh verifiers for the cold JWKS fetch")
    options = parser.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        upstream = stack.enter_context(instant_upstream())
        issuer = stack.enter_context(start_oidc_server())
        config = Path(tmp) / "clients.toml"
        config.write_text(f'[clients.bench]\ntoken_sha256 = "{hash_token(NAMED)}"\n')
        base = base_env() | {"GGUF_BASE_URL": upstream, "MODELSLAB_API_KEY": KEY}
        oauth = {"GGUF_MCP_OAUTH_ISSUER": issuer.issuer}
        client_file = Path(tmp) / "introspection-client"
        client_file.write_text(f"{issuer.resource_server.client_id}\n{issuer.resource_server.client_secret}\n")

        def start(name: str, env: dict[str, str], launcher: Callable[[int], list[str]]) -> ServerProcess:
            port = free_port()
            return stack.enter_context(serving(launcher(port), port, base | env, Path(tmp) / f"{name}.stderr"))

        open_server = start("none", {}, gguf_mcp_argv)
        every = start("every", {"GGUF_MCP_AUTH_TOKEN": STATIC, "GGUF_MCP_CONFIG": str(config)} | oauth, public)
        introspecting = start(
            "introspection",
            oauth
            | {
                "GGUF_MCP_OAUTH_INTROSPECTION_URL": issuer.metadata_endpoint("introspection_endpoint"),
                "GGUF_MCP_OAUTH_CLIENT_FILE": str(client_file),
            },
            public,
        )
        issuer.issue_for(introspecting.url, format="opaque", ttl=3600)
        jwt = anyio.run(issuer.client_credentials_token, every.url)
        opaque = anyio.run(issuer.client_credentials_token, introspecting.url)
        kinds: dict[str, tuple[ServerProcess, str | None]] = {
            "none": (open_server, None),
            "static": (every, STATIC),
            "named": (every, NAMED),
            "jwt": (every, jwt),
            "introspection": (introspecting, opaque),
        }
        results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
        for _ in range(options.rounds):
            for kind, (server, token) in kinds.items():
                results[kind].append(calls(server, token, options.calls))
        cold, warm = anyio.run(cold_and_warm, issuer, every.url, options.cold)
        in_process = anyio.run(checks, issuer, every.url, introspecting.url, 2000)

    report(results, in_process, cold, warm, options)


def report(
    results: dict[str, list[tuple[float, float]]],
    in_process: dict[str, float],
    cold: list[float],
    warm: list[float],
    options: Any,
) -> None:
    def medians(kind: str) -> tuple[float, float]:
        return (
            statistics.median(t for t, _ in results[kind]) * 1e3,
            statistics.median(c for _, c in results[kind]) * 1e3,
        )

    floor_time, floor_cpu = medians("none")
    print(f"{options.rounds} rounds x {options.calls} chat calls per kind, interleaved (medians of the rounds)")
    print(f"{'kind':<14}{'ms/call':>9}{'+ms':>8}{'server CPU ms/call':>20}{'+ms':>8}")
    for kind in results:
        latency, cpu = medians(kind)
        print(f"{kind:<14}{latency:>9.3f}{latency - floor_time:>+8.3f}{cpu:>20.3f}{cpu - floor_cpu:>+8.3f}")
    print("The check alone, in process: " + ", ".join(f"{k} {v * 1e6:.1f} us" for k, v in in_process.items()))
    print(
        f"JWT check in process, {len(cold)} fresh verifiers: cold (metadata + JWKS fetched) median "
        f"{statistics.median(cold) * 1e3:.2f} ms (max {max(cold) * 1e3:.2f}), warm median "
        f"{statistics.median(warm) * 1e3:.3f} ms"
    )


if __name__ == "__main__":
    main()
