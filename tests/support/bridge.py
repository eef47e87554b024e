"""Start gguf-mcp as users do (a real subprocess) and talk to it with the official `mcp` client.

`Bridge.connect(env)` spawns `python -m gguf_mcp` with exactly `env` and yields a connected
`mcp.Client`, over stdio (the client spawns it) or Streamable HTTP (we spawn it on a free port
and wait for /healthz). The server's stderr goes to a file the test can read, and every tool
result is kept so tests can check that no secret ever reached the agent.

For HTTP tests that need the process itself (signals, limits, several workers):
`http_server(gateway, workdir, settings)` runs gguf-mcp (or, with `launcher=`, the README's
uvicorn command) over canned gateway deployments, and `connect_http(url, token)` is a client
that sends a bearer token.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from tests.support.gateway import ACCOUNT_KEY, Gateway
from tests.support.proc import stop

Transport = Literal["stdio", "http"]
INITIALIZE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
"""An MCP initialize request, for raw HTTP requests (POST it with MCP_HEADERS)."""
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def base_env() -> dict[str, str]:
    """What an MCP client passes a server: PATH and HOME, nothing from the test's own settings."""
    keep = ("PATH", "HOME", "LANG", "SYSTEMROOT")
    return {k: os.environ[k] for k in keep if k in os.environ} | {"PYTHONPATH": str(ROOT)}


@dataclass(frozen=True)
class ServerProcess:
    """An HTTP server we started: its process, where it listens, and its stderr."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    stderr_path: Path

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The MCP endpoint."""
        return f"{self.root}/mcp"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 30) -> None:
        """Until `text` shows `count` times in the server's stderr (e.g. the server says it reloaded)."""
        deadline = time.monotonic() + timeout
        while self.stderr().count(text) < count:
            assert time.monotonic() < deadline, f"no {text!r} ({count}) in: {self.stderr()[-2000:]}"
            time.sleep(0.05)  # polling a subprocess's log file: there is no event to wait on


def gguf_mcp_argv(port: int, *extra_args: str) -> list[str]:
    """`gguf-mcp --transport http` on `port`."""
    return [sys.executable, "-m", "gguf_mcp", "--transport", "http", "--port", str(port), *extra_args]


def uvicorn_workers_argv(port: int, workers: int, *extra_args: str) -> list[str]:
    """The README's multi-worker command: uvicorn's CLI with gguf-mcp's app factory."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "gguf_mcp.http:create_app",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--http",
        "gguf_mcp.http:GuardedH11Protocol",  # the connection cap and header time-out (README)
        *extra_args,
    ]


def wait_until_healthy(process: subprocess.Popen[Any], root: str, log: Callable[[], str]) -> None:
    """Poll `root`/healthz until it answers 200; fail with `log()` if the process exits or time runs out.

    It names the server by a loopback Host whatever address it listens on: this waits for the
    server; tests of what a Host header gets come after.
    """
    deadline = time.monotonic() + START_TIMEOUT_S
    loopback = {"host": f"127.0.0.1:{root.rsplit(':', 1)[1]}"}
    with httpx.Client(timeout=2) as http:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}: {log()}")
            try:
                if http.get(f"{root}/healthz", headers=loopback).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no /healthz at {root} in {START_TIMEOUT_S} s: {log()}")
            time.sleep(0.05)  # polling a subprocess's port: there is no event to wait on


@contextmanager
def serving(
    argv: list[str], port: int, env: dict[str, str], stderr_path: Path, host: str = "127.0.0.1"
) -> Iterator[ServerProcess]:
    """Run `argv` (a server listening on host:port), wait for /healthz, stop it with SIGTERM on exit."""
    with stderr_path.open("ab") as err:
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    server = ServerProcess(process, host, port, stderr_path)
    try:
        wait_until_healthy(process, server.root, lambda: server.stderr()[-2000:])
        yield server
    finally:
        stop(process)


Launcher = Callable[[int], list[str]]
"""The command line of an HTTP server on a given port: `gguf_mcp_argv` or a `uvicorn_workers_argv` lambda."""


def open_files_limited(limit: int, launcher: Launcher = gguf_mcp_argv) -> Launcher:
    """`launcher` with the server's open-file limit (`ulimit -n`) lowered to `limit`."""
    return lambda port: ["prlimit", f"--nofile={limit}:", "--", *launcher(port)]


@contextmanager
def http_server(
    gateway: Gateway,
    workdir: Path,
    settings: Mapping[str, str] | None = None,
    *,
    deployments: Sequence[str] = ("alpha",),
    launcher: Launcher = gguf_mcp_argv,
    host: str = "127.0.0.1",
) -> Iterator[ServerProcess]:
    """`launcher` on a free port, serving `deployments` (canned on `gateway`) with `settings`.

    Its configuration and stderr go to `workdir`; it is stopped with SIGTERM on exit.
    """
    env = base_env() | canned_deployments(gateway, workdir / "deployments.toml", deployments) | dict(settings or {})
    port = free_port()
    with serving(launcher(port), port, env, workdir / "stderr", host) as server:
        yield server


@contextmanager
def running_http_server(env: dict[str, str], stderr_path: Path, *extra_args: str) -> Iterator[str]:
    """`gguf-mcp --transport http` on a free loopback port; yields its /mcp URL."""
    port = free_port()
    with serving(gguf_mcp_argv(port, *extra_args), port, env, stderr_path) as server:
        yield server.url


@asynccontextmanager
async def connect_http(
    url: str,
    token: str | None = None,
    on_response: Callable[[httpx2.Response], Awaitable[None]] | None = None,
    **client_options: Any,
) -> AsyncIterator[Client]:
    """The official client over Streamable HTTP, sending `Authorization: Bearer <token>` if given;
    `on_response` sees every HTTP response (headers only: the body may still be streaming)."""
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    hooks = {"response": [on_response]} if on_response is not None else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(120), event_hooks=hooks) as http,
        Client(streamable_http_client(url, http_client=http), **client_options) as client,
    ):
        yield client


def canned_deployments(gateway: Gateway, config: Path, names: Sequence[str]) -> dict[str, str]:
    """Settings for deployments `names`, each a canned gateway deployment of the same id."""
    for name in names:
        gateway.add_canned_deployment(name)
    config.write_text("".join(f'[deployments.{n}]\nbase_url = "{gateway.base_url_for(n)}"\n' for n in names))
    return {"GGUF_MCP_CONFIG": str(config), "MODELSLAB_API_KEY": ACCOUNT_KEY}


class Bridge:
    """gguf-mcp under test, over one transport."""

    def __init__(self, transport: Transport, workdir: Path) -> None:
        self.transport = transport
        self.stderr_path = workdir / f"gguf-mcp-{transport}.stderr"
        self.results: list[CallToolResult] = []

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    @asynccontextmanager
    async def connect(self, env: dict[str, str]) -> AsyncIterator[Client]:
        full_env = base_env() | env
        if self.transport == "stdio":
            params = StdioServerParameters(command=sys.executable, args=["-m", "gguf_mcp"], env=full_env)
            with self.stderr_path.open("a") as errlog:
                async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=120) as client:
                    yield _Recording(client, self.results)  # type: ignore[misc]
        else:
            with running_http_server(full_env, self.stderr_path) as url:
                async with Client(url, read_timeout_seconds=120) as client:
                    yield _Recording(client, self.results)  # type: ignore[misc]

    def seen_text(self) -> str:
        """Everything the agent and the operator saw: tool results and stderr."""
        dumped = [json.dumps(r.model_dump(mode="json", by_alias=True)) for r in self.results]
        return "\n".join(dumped) + "\n" + self.stderr()


class _Recording:
    """A Client whose tool results are also kept for the secret check."""

    def __init__(self, client: Client, results: list[CallToolResult]) -> None:
        self._client = client
        self._results = results

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> CallToolResult:
        result = await self._client.call_tool(name, arguments, **kwargs)
        self._results.append(result)
        return result


@pytest.fixture(params=["stdio", "http"])
def bridge(request: pytest.FixtureRequest, tmp_path: Path) -> Bridge:
    transport: Transport = request.param
    return Bridge(transport, tmp_path)
