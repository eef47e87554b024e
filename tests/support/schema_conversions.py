"""How an agent framework turns gguf-mcp's tool schemas into its own tools; run with that framework's Python.

``python schema_conversions.py FRAMEWORK < request.json`` connects the framework's own MCP client
to each gguf-mcp of the request (``servers``: label -> Streamable HTTP ``url`` and ``samples``),
converts every listed tool the way the framework does for a model, and prints one JSON report per
server label on stdout:

- ``llama-index``: ``McpToolSpec.to_tool_list_async()``; per tool, the parameters the model sees
  and, for each of the request's ``samples[tool]`` (argument sets in every form gguf-mcp accepts),
  whether the converted tool's argument model takes it unchanged.
- ``openai-agents``: ``MCPUtil.to_function_tool(..., convert_schemas_to_strict=True)``, per tool
  and per argument (a one-argument tool each); ``strict`` is false where the SDK fell back.
- ``pydantic-ai``: ``OpenAIJsonSchemaTransformer(strict=True)`` (OpenAI strict mode) on the tools
  its MCP client lists, per tool and per argument; ``error`` is what it refused with.

Runs in the framework's own environment (tests/support/frameworks.py), never in gguf-mcp's, so
the frameworks' imports are unknown to mypy here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

Report = dict[str, Any]


def one_argument(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The tool's input schema with only `name`: is this one argument strict-convertible?"""
    return {"type": "object", "properties": {name: schema["properties"][name]}}


async def llama_index(server: dict[str, Any], samples: dict[str, list[dict[str, Any]]]) -> Report:
    from llama_index.tools.mcp import BasicMCPClient, McpToolSpec  # type: ignore[import-not-found]

    client = BasicMCPClient(server["url"])
    report: Report = {}
    for tool in await McpToolSpec(client).to_tool_list_async():
        model = tool.metadata.fn_schema
        checked = []
        for sample in samples.get(tool.metadata.name, []):
            try:
                kept = model.model_validate(sample).model_dump(exclude_unset=True)
                checked.append({"sample": sample, "kept": kept == sample, "as": kept})
            except Exception as exc:  # a pydantic ValidationError: the form is lost
                checked.append({"sample": sample, "kept": False, "error": str(exc).splitlines()[:3]})
        fields = {name: str(field.annotation) for name, field in model.model_fields.items()}
        report[tool.metadata.name] = {
            "parameters": tool.metadata.get_parameters_dict(),
            "fields": fields,
            "samples": checked,
        }
    return report


async def openai_agents(server: dict[str, Any]) -> Report:
    from agents.mcp import MCPServerStreamableHttp, MCPUtil  # type: ignore[import-not-found]
    from mcp.types import Tool

    reasons: list[str] = []

    class Reasons(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "strict mode" in record.getMessage():
                reasons.append(record.getMessage())

    logger = logging.getLogger("openai.agents")
    logger.setLevel(logging.INFO)
    logger.addHandler(Reasons())

    def convert(tool: Any, mcp: Any) -> Report:
        reasons.clear()
        converted = MCPUtil.to_function_tool(tool, mcp, convert_schemas_to_strict=True)
        return {"strict": converted.strict_json_schema, "error": "; ".join(reasons) or None}

    report: Report = {}
    async with MCPServerStreamableHttp(params={"url": server["url"]}, client_session_timeout_seconds=30) as mcp:
        for tool in await mcp.list_tools():
            entry = convert(tool, mcp)
            schema = tool.input_schema
            entry["arguments"] = {
                name: convert(Tool(name=f"{tool.name}_{name}", input_schema=one_argument(name, schema)), mcp)
                for name in schema.get("properties", {})
            }
            report[tool.name] = entry
    return report


async def pydantic_ai(server: dict[str, Any]) -> Report:
    from pydantic_ai.exceptions import UserError  # type: ignore[import-not-found]
    from pydantic_ai.mcp import MCPToolset  # type: ignore[import-not-found]
    from pydantic_ai.profiles.openai import OpenAIJsonSchemaTransformer  # type: ignore[import-not-found]

    def convert(schema: dict[str, Any]) -> Report:
        try:
            OpenAIJsonSchemaTransformer(json.loads(json.dumps(schema)), strict=True).walk()
        except UserError as exc:
            return {"strict": False, "error": str(exc)}
        return {"strict": True, "error": None}

    report: Report = {}
    async with MCPToolset(server["url"], init_timeout=30) as mcp:
        for tool in await mcp.list_tools():
            schema = tool.input_schema
            entry = convert(schema)
            entry["arguments"] = {name: convert(one_argument(name, schema)) for name in schema.get("properties", {})}
            report[tool.name] = entry
    return report


async def main(framework: str) -> None:
    """One report per server of the request."""
    request = json.load(sys.stdin)
    reports: Report = {}
    for label, server in request["servers"].items():
        if framework == "llama-index":
            reports[label] = await llama_index(server, server["samples"])
        elif framework == "openai-agents":
            reports[label] = await openai_agents(server)
        elif framework == "pydantic-ai":
            reports[label] = await pydantic_ai(server)
        else:
            raise SystemExit(f"unknown framework {framework!r}")
    print(json.dumps(reports))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
