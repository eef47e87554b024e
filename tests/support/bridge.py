"""Start gguf-mcp as users do (a real subprocess) and talk to it with the official `mcp` client.

`Bridge.connect(env)` spawns `python -m gguf_mcp` with exactly `env` and yields a connected
`mcp.Client`, over stdio (the client spawns it) or Streamable HTTP (we spawn it on a free port
and wait for /healthz). The server's stderr goes to a file the test can read, and every tool
result is kept so tests can check that no secret ever reached the agent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult

Transport = Literal["stdio", "http"]
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


@contextmanager
def running_http_server(env: dict[str, str], stderr_path: Path, *extra_args: str) -> Iterator[str]:
    """`gguf-mcp --transport http` on a free loopback port; yields its /mcp URL."""
    port = free_port()
    args = [sys.executable, "-m", "gguf_mcp", "--transport", "http", "--port", str(port), *extra_args]
    with stderr_path.open("ab") as err:
        process = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(timeout=2) as http:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"gguf-mcp exited with {process.returncode}: {stderr_path.read_text()[-2000:]}")
                try:
                    if http.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gguf-mcp did not answer /healthz in {START_TIMEOUT_S} s")
                time.sleep(0.05)  # polling a subprocess's port: there is no event to wait on
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
