"""Tool definitions: what every agent pays for in context, and what it promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client

from gguf_mcp.config import TOOL_NAMES, load_settings
from tests.support.upstream import offline_server

pytestmark = pytest.mark.anyio
BUDGET = 4000  # characters of tools/list for all tools; README reports the measured size


async def listed(env: dict[str, str]) -> list[dict[str, object]]:
    async with Client(offline_server(load_settings({}, env)), mode="legacy") as client:
        result = await client.list_tools()
    return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in result.tools]


async def test_all_tools_fit_the_context_budget() -> None:
    tools = await listed({"GGUF_BASE_URL": "http://127.0.0.1:9"})
    assert [t["name"] for t in tools] == list(TOOL_NAMES)
    size = len(json.dumps(tools, separators=(",", ":")))
    assert size <= BUDGET, f"tools/list is {size} characters, over the {BUDGET} budget"


async def test_every_tool_is_described_read_only_and_structured() -> None:
    for tool in await listed({"GGUF_BASE_URL": "http://127.0.0.1:9"}):
        assert tool["description"]
        assert tool["annotations"] == {"readOnlyHint": True, "openWorldHint": True}
        assert tool["outputSchema"]["type"] == "object"  # type: ignore[index]
        assert tool["inputSchema"]["type"] == "object"  # type: ignore[index]


async def test_several_deployments_are_offered_by_name(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[deployments.a]\nbase_url = "http://127.0.0.1:9"\n[deployments.b]\nbase_url = "http://127.0.0.1:8"\n'
    )
    for tool in await listed({"GGUF_MCP_CONFIG": str(config)}):
        assert tool["inputSchema"]["properties"]["deployment"] == {"type": "string", "enum": ["a", "b"]}  # type: ignore[index]
