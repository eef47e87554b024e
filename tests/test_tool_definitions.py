"""Tool definitions: what every agent pays for in context, and what it promises."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mcp import Client

from gguf_mcp.config import TOOL_NAMES, load_settings
from tests.support.upstream import offline_server

README = Path(__file__).resolve().parents[1] / "README.md"
BUDGET = 4000  # characters of tools/list for all tools; README reports the measured size
TWO_DEPLOYMENTS = '[deployments.a]\nbase_url = "http://127.0.0.1:9"\n[deployments.b]\nbase_url = "http://127.0.0.1:8"\n'


async def listed(env: dict[str, str]) -> list[dict[str, object]]:
    async with Client(offline_server(load_settings({}, env)), mode="legacy") as client:
        result = await client.list_tools()
    return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in result.tools]


async def test_all_tools_fit_the_context_budget() -> None:
    tools = await listed({"GGUF_BASE_URL": "http://127.0.0.1:9"})
    assert [t["name"] for t in tools] == list(TOOL_NAMES)
    size = len(json.dumps(tools, separators=(",", ":")))
    assert size <= BUDGET, f"tools/list is {size} characters, over the {BUDGET} budget"
    stated = re.search(r"definitions together cost ([\d,]+) characters", README.read_text())
    assert stated is not None and int(stated.group(1).replace(",", "")) == size, f"the README should say {size:,}"


async def test_every_optional_argument_accepts_null(tmp_path: Path) -> None:
    """Strict converters (OpenAI strict mode) make every argument required: null is how a model
    leaves one unset (tests/test_schema_portability.py shows it with the converters themselves)."""
    config = tmp_path / "c.toml"
    config.write_text(TWO_DEPLOYMENTS)
    nullable: list[tuple[str, str, bool]] = []
    refusing: list[tuple[str, str, bool]] = []
    for tool in await listed({"GGUF_MCP_CONFIG": str(config)}):
        schema: Any = tool["inputSchema"]
        for name, prop in schema["properties"].items():
            takes_null = {"type": "null"} in prop.get("anyOf", [])
            (refusing if name in schema.get("required", []) else nullable).append((str(tool["name"]), name, takes_null))
    assert len(nullable) == 28  # deployment on all five tools, and chat's 9, messages' 8, complete's 6 others
    assert [f"{tool}.{name}" for tool, name, takes_null in nullable if not takes_null] == []
    assert [f"{tool}.{name}" for tool, name, takes_null in refusing if takes_null] == []  # required: never null


async def test_every_tool_is_described_read_only_and_structured() -> None:
    for tool in await listed({"GGUF_BASE_URL": "http://127.0.0.1:9"}):
        assert tool["description"]
        assert tool["annotations"] == {"readOnlyHint": True}  # openWorldHint: true is the protocol's default
        assert tool["outputSchema"]["type"] == "object"  # type: ignore[index]
        assert tool["inputSchema"]["type"] == "object"  # type: ignore[index]


async def test_several_deployments_are_offered_by_name(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(TWO_DEPLOYMENTS)
    for tool in await listed({"GGUF_MCP_CONFIG": str(config)}):
        deployment = tool["inputSchema"]["properties"]["deployment"]  # type: ignore[index]
        assert deployment == {"anyOf": [{"type": "string", "enum": ["a", "b"]}, {"type": "null"}]}


def nodes(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema of `schema` with its path (properties, items, anyOf branches)."""
    if not isinstance(schema, dict):
        return
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[]")
    for i, sub in enumerate(schema.get("anyOf", [])):
        yield from nodes(sub, f"{path}|{i}")


async def test_schemas_keep_to_the_portable_subset(tmp_path: Path) -> None:
    """What tests/test_schema_portability.py checks with the clients themselves, in a nutshell: no
    `"type"` lists (unions are `anyOf`), every node typed, every input array typed item by item, and
    a tool without arguments closed."""
    config = tmp_path / "c.toml"
    config.write_text(TWO_DEPLOYMENTS)
    for env in ({"GGUF_BASE_URL": "http://127.0.0.1:9"}, {"GGUF_MCP_CONFIG": str(config)}):
        for tool in await listed(env):
            for kind in ("inputSchema", "outputSchema"):
                for path, node in nodes(tool[kind]):
                    where = f"{tool['name']} {kind}{path}: {node}"
                    assert isinstance(node.get("type", ""), str), where
                    assert "type" in node or "anyOf" in node or "enum" in node, where
                    if kind == "inputSchema" and node.get("type") == "array":
                        assert isinstance(node.get("items"), dict) and "type" in node["items"], where
            inputs: Any = tool["inputSchema"]
            if not inputs["properties"]:
                assert inputs["additionalProperties"] is False, tool
