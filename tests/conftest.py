"""Shared fixtures: the real llama.cpp server, the gateway emulator, gguf-mcp under an MCP client."""

import pytest

pytest_plugins = [
    "tests.support.llama",
    "tests.support.gateway",
    "tests.support.bridge",
    "tests.support.node_tools",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
