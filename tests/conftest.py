"""Shared fixtures: the real llama.cpp server, the gateway emulator, gguf-mcp under an MCP client."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

# Before any support module is imported (as a plugin below, or by a test): their asserts are
# rewritten too, so a failing check in a fixture says what it compared.
pytest.register_assert_rewrite("tests.support")

if TYPE_CHECKING:
    from tests.support.gateway import Gateway
    from tests.support.llama import LlamaServer
    from tests.support.node_tools import NodeTools

pytest_plugins = [
    "tests.support.llama",
    "tests.support.gateway",
    "tests.support.bridge",
    "tests.support.oidc",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def node_tools() -> NodeTools:
    """The pinned Node 22, conformance suite, Inspector and mcpb CLI (installed on first use)."""
    from tests.support.node_tools import ensure_node_tools

    return ensure_node_tools()


@pytest.fixture
def gw(gateway: Gateway, llama_server: LlamaServer) -> Gateway:
    """The gateway with deployments `dep`, `dep-main` and `dep-other`, each the real llama.cpp server."""
    for dep in ("dep", "dep-main", "dep-other"):
        gateway.add_deployment(dep, llama_server.url, llama_server.api_key)
    return gateway


# Tests whose assertions are about time (a cancel reaching llama.cpp, progress pacing, shutdown
# grace, fault time bounds, load): under `pytest -n 2` they all run on one worker, one after
# another, so they never share the machine with each other, only with the quicker rest.
TIMED = ("test_e2e_streaming", "test_faults", "test_http_shutdown", "test_http_load", "test_saturation")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in TIMED:
            item.add_marker(pytest.mark.xdist_group("timed"))
