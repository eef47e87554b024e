"""Who calls, and what they may use: a caller's policy, enforced on every MCP request, stdio and HTTP alike.

`current_caller(state)` is the one way to learn who makes the current request: the client its
bearer token named (the HTTP layer verified it), else the client `default` (stdio, or HTTP
without credentials), whose `[clients.default]` table may restrict it too.

`CallerPolicy` is the SDK's public `ServerMiddleware` (`MCPServer(middleware=[...])`): it runs
around every request before the SDK looks anything up, so a refused call is answered before any
tool runs and nothing is sent upstream.
- `tools/call`: a tool the caller's scopes or `tools` list leave out is refused naming the scope or
  the list; a `deployment` outside its `deployments` (or no deployment, when the default is outside
  them) is refused naming the ones it may use;
- `tools/list`: only the tools it may call, each `deployment` enum narrowed to its deployments;
- `resources/list` and `resources/read`: they need `gguf:models` and show only its deployments.

The client's name also goes into the logs' context (`gguf_mcp.logs.client_name`) for the request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, CallToolResult, TextContent
from pydantic import BaseModel

from gguf_mcp.clients import MODELS_SCOPE, TOOL_SCOPES, Caller, ClientPolicy
from gguf_mcp.config import Deployment
from gguf_mcp.errors import (
    NotAllowed,
    default_not_allowed,
    deployment_not_allowed,
    error_text,
    scope_missing,
    tool_not_listed,
)
from gguf_mcp.identity import caller_of
from gguf_mcp.logs import client_name
from gguf_mcp.state import AppState

log = logging.getLogger(__name__)

DEPLOYMENTS_URI = "gguf://deployments"
EVERY_DEPLOYMENT = frozenset({"list_models"})
"""Tools for which no `deployment` means all of the caller's, not the default one."""


def current_caller(state: AppState) -> Caller:
    """Who makes the current MCP request (call it inside a tool, a resource or a middleware)."""
    return caller_of(get_access_token(), state.identity.directory)


def deployments_for(state: AppState, caller: Caller) -> list[Deployment]:
    """The configured deployments `caller` may use, in configuration order."""
    return [d for name, d in state.settings.deployments.items() if caller.policy.allows_deployment(name)]


def tool_refusal(state: AppState, caller: Caller, tool: str, arguments: Mapping[str, Any]) -> NotAllowed | None:
    """Why `caller` may not make this call (None: it may): the tool first, then the deployment."""
    policy = caller.policy
    scope = TOOL_SCOPES.get(tool)
    if scope is None:
        return None  # not one of gguf-mcp's tools: the SDK answers "Unknown tool"
    if scope not in policy.scopes:
        return scope_missing(caller.name, f"tool {tool}", scope, policy.scopes)
    if policy.tools is not None and tool not in policy.tools:
        return tool_not_listed(caller.name, tool, policy.tools)
    return _deployment_refusal(state, caller, tool, arguments.get("deployment"))


def _deployment_refusal(state: AppState, caller: Caller, tool: str, named: object) -> NotAllowed | None:
    policy = caller.policy
    if policy.deployments is None:
        return None
    if isinstance(named, str) and named:
        return None if named in policy.deployments else deployment_not_allowed(caller.name, named, policy.deployments)
    default = state.settings.default_deployment
    if named is None and tool not in EVERY_DEPLOYMENT and default not in policy.deployments:
        return default_not_allowed(caller.name, default, policy.deployments)
    return None  # anything else is the tool's argument validation to refuse


def resource_refusal(caller: Caller, uri: str) -> NotAllowed | None:
    """Why `caller` may not read `uri` (None: it may): `gguf:models`, then the deployment it names."""
    policy = caller.policy
    if MODELS_SCOPE not in policy.scopes:
        return scope_missing(caller.name, f"resource {uri}", MODELS_SCOPE, policy.scopes)
    name = _deployment_of(uri)
    if name is not None and not policy.allows_deployment(name):
        return deployment_not_allowed(caller.name, name, policy.deployments or ())
    return None


def _deployment_of(uri: str) -> str | None:
    """The deployment a resource URI names (`gguf://deployments/<name>`); None for the list of them."""
    prefix = DEPLOYMENTS_URI + "/"
    return uri.removeprefix(prefix) if uri.startswith(prefix) else None


def visible_tool(tool: Mapping[str, Any], policy: ClientPolicy) -> Mapping[str, Any]:
    """A `tools/list` entry as `policy` shows it: its `deployment` enum holding only the deployments it may use."""
    schema = tool.get("inputSchema", {})
    properties = schema.get("properties", {})
    choice = properties.get("deployment")
    if policy.deployments is None or not isinstance(choice, dict):
        return tool
    narrowed = _narrowed(choice, policy.deployments)
    return {**tool, "inputSchema": {**schema, "properties": {**properties, "deployment": narrowed}}}


def _narrowed(schema: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """`schema` (an enum, or an anyOf holding one) with only the `allowed` values in its enum."""
    if "enum" in schema:
        return {**schema, "enum": [value for value in schema["enum"] if value in allowed]}
    if "anyOf" in schema:
        return {**schema, "anyOf": [_narrowed(branch, allowed) for branch in schema["anyOf"]]}
    return schema


def _resource_visible(resource: Mapping[str, Any], policy: ClientPolicy) -> bool:
    name = _deployment_of(str(resource.get("uri", "")))
    return MODELS_SCOPE in policy.scopes and (name is None or policy.allows_deployment(name))


def _wire(result: HandlerResult) -> dict[str, Any]:
    """A handler's result as the wire has it (the SDK's handlers already return it so; a model is dumped
    as the SDK's runner dumps it)."""
    if isinstance(result, BaseModel):
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return dict(result or {})


Request = ServerRequestContext[Any, Any]
Handler = Callable[[Request, CallNext, Caller], Awaitable[HandlerResult]]


class CallerPolicy:
    """The SDK's `ServerMiddleware`: every request's caller, its policy applied (module docstring)."""

    def __init__(self, state: AppState) -> None:
        self._state = state
        self._handlers: dict[str, Handler] = {
            "tools/call": self._call_tool,
            "tools/list": self._list_tools,
            "resources/list": self._list_resources,
            "resources/read": self._read_resource,
        }

    async def __call__(self, ctx: Request, call_next: CallNext) -> HandlerResult:
        caller = current_caller(self._state)
        named = client_name.set(caller.name)
        try:
            handler = self._handlers.get(ctx.method)
            return await (handler(ctx, call_next, caller) if handler else call_next(ctx))
        finally:
            client_name.reset(named)

    async def _call_tool(self, ctx: Request, call_next: CallNext, caller: Caller) -> HandlerResult:
        params = ctx.params or {}
        tool, arguments = params.get("name"), params.get("arguments")
        if not isinstance(tool, str):
            return await call_next(ctx)  # malformed: the SDK's validation answers
        refusal = tool_refusal(self._state, caller, tool, arguments if isinstance(arguments, Mapping) else {})
        if refusal is None:
            return await call_next(ctx)
        log.info("Refused a call of %.100r: %s", tool, refusal)
        text = error_text(f"Error executing tool {tool}: {refusal}", self._state.upstream.redactor)
        return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)

    async def _list_tools(self, ctx: Request, call_next: CallNext, caller: Caller) -> HandlerResult:
        result = _wire(await call_next(ctx))
        policy = caller.policy
        tools = [visible_tool(tool, policy) for tool in result.get("tools", ()) if policy.allows_tool(tool["name"])]
        return {**result, "tools": tools}

    async def _list_resources(self, ctx: Request, call_next: CallNext, caller: Caller) -> HandlerResult:
        result = _wire(await call_next(ctx))
        return {**result, "resources": [r for r in result.get("resources", ()) if _resource_visible(r, caller.policy)]}

    async def _read_resource(self, ctx: Request, call_next: CallNext, caller: Caller) -> HandlerResult:
        uri = (ctx.params or {}).get("uri")
        refusal = resource_refusal(caller, uri) if isinstance(uri, str) else None
        if refusal is None:
            return await call_next(ctx)
        log.info("Refused a read of %.200r: %s", uri, refusal)
        raise MCPError(code=INVALID_PARAMS, message=str(refusal), data={"uri": uri})
