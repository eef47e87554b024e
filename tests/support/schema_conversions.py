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

Given a ``null_calls`` request instead (the URL of a gguf-mcp in front of llama.cpp and each
tool's required arguments), either strict converter reports, per tool, what a model bound
by the strict schema sends to leave every optional argument unset: each optional argument
``null``. ``refused`` names the arguments whose converted schema does not take that (the whole
tool's schema where the framework converted it, else the argument's own), and ``error`` is what
the call, made through the framework's own MCP client, returned instead of a result.

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


def null_arguments(schema: dict[str, Any], required: dict[str, Any]) -> dict[str, Any]:
    """The required arguments as given, and every other one `null`: what a strict model sends to leave it unset."""
    return {name: required.get(name) for name in schema.get("properties", {})}


def refused(strict_schema: dict[str, Any], arguments: dict[str, Any]) -> list[str]:
    """The arguments a strict schema refuses (jsonschema: what OpenAI's structured outputs enforce)."""
    import jsonschema

    errors = jsonschema.Draft202012Validator(strict_schema).iter_errors(arguments)
    return sorted({str(e.path[0]) if e.path else e.message for e in errors})


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


async def openai_agents_null_calls(calls: dict[str, Any]) -> Report:
    from agents.mcp import MCPServerStreamableHttp, MCPUtil
    from mcp.types import Tool

    def strict_schema(tool: Any, mcp: Any) -> dict[str, Any] | None:
        converted = MCPUtil.to_function_tool(tool, mcp, convert_schemas_to_strict=True)
        return converted.params_json_schema if converted.strict_json_schema else None

    report: Report = {}
    async with MCPServerStreamableHttp(params={"url": calls["url"]}, client_session_timeout_seconds=60) as mcp:
        for tool in await mcp.list_tools():
            schema = tool.input_schema
            arguments = null_arguments(schema, calls["required"][tool.name])
            whole = strict_schema(tool, mcp)
            if whole is not None:
                no = refused(whole, arguments)
            else:  # a tool with free-form arguments stays loose; each argument is still converted on its own
                one = {n: Tool(name=f"{tool.name}_{n}", input_schema=one_argument(n, schema)) for n in arguments}
                no = [n for n, t in one.items() if (s := strict_schema(t, mcp)) and refused(s, {n: arguments[n]})]
            result = await mcp.call_tool(tool.name, arguments)
            error = "".join(getattr(c, "text", "") for c in result.content) if result.is_error else None
            report[tool.name] = {"arguments": arguments, "whole_tool_strict": whole is not None}
            report[tool.name] |= {"refused": no, "error": error}
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


async def pydantic_ai_null_calls(calls: dict[str, Any]) -> Report:
    from pydantic_ai.mcp import MCPToolset
    from pydantic_ai.profiles.openai import OpenAIJsonSchemaTransformer

    report: Report = {}
    async with MCPToolset(calls["url"], init_timeout=30, read_timeout=60) as mcp:
        for tool in await mcp.list_tools():
            arguments = null_arguments(tool.input_schema, calls["required"][tool.name])
            strict = OpenAIJsonSchemaTransformer(json.loads(json.dumps(tool.input_schema)), strict=True).walk()
            try:
                await mcp.direct_call_tool(tool.name, arguments)
                error = None
            except Exception as exc:  # a tool error (ModelRetry) or a refused call
                error = f"{type(exc).__name__}: {exc}"
            report[tool.name] = {"arguments": arguments, "whole_tool_strict": True}
            report[tool.name] |= {"refused": refused(strict, arguments), "error": error}
    return report


async def main(framework: str) -> None:
    """One report per server of the request."""
    request = json.load(sys.stdin)
    reports: Report = {}
    calls = request.get("null_calls")
    if calls is not None:
        null_calls = {"openai-agents": openai_agents_null_calls, "pydantic-ai": pydantic_ai_null_calls}[framework]
        print(json.dumps(await null_calls(calls)))
        return
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
