"""Shared fixtures: the real llama.cpp server, the gateway emulator, gguf-mcp under an MCP client."""

import pytest

from tests.support.gateway import Gateway
from tests.support.llama import LlamaServer

pytest_plugins = [
    "tests.support.llama",
    "tests.support.gateway",
    "tests.support.bridge",
    "tests.support.node_tools",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def gw(gateway: Gateway, llama_server: LlamaServer) -> Gateway:
    """The gateway with deployments `dep`, `dep-main` and `dep-other`, each the real llama.cpp server."""
    for dep in ("dep", "dep-main", "dep-other"):
        gateway.add_deployment(dep, llama_server.url, llama_server.api_key)
    return gateway
