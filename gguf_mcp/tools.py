"""The MCP tools: thin adapters from typed arguments to one upstream call and a typed result.

Descriptions are written for the model that reads them, and kept short: every character of
`tools/list` is context the agent pays for. Argument models bound what one call can ask for
(list lengths, nesting, integers the upstream can represent), so a huge or hostile call is
refused before it costs memory or reaches a deployment.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from gguf_mcp.access import current_caller, deployments_for
from gguf_mcp.config import Deployment, Settings
from gguf_mcp.dialects import (
    ANTHROPIC_MESSAGES,
    EMBEDDINGS,
    OPENAI_CHAT,
    OPENAI_COMPLETION,
    ChatResult,
    CompletionResult,
    Dialect,
    MessagesResult,
    usage,
)
from gguf_mcp.errors import (
    GGUFMCPError,
    NotSupported,
    error_text,
    invalid_arguments,
    no_embeddings,
    unexpected_shape,
)
from gguf_mcp.fairshare import Call
from gguf_mcp.generation import generate, reported, waiting_notices
from gguf_mcp.health import ModelsResult, query_models
from gguf_mcp.logs import request_id
from gguf_mcp.schemas import accept_null, compact, prune
from gguf_mcp.state import AppState

Ctx = Context[AppState, Any]

# ---------------------------------------------------------------------------------------------
# Limits: generous for any real conversation, small enough that one call cannot exhaust memory.

MAX_MESSAGES = 4096
MAX_BLOCKS = 1024
MAX_TOOLS = 512
MAX_STOP = 64
MAX_INPUTS = 2048
MAX_DEPTH = 32
INT32 = 2**31 - 1
UINT32 = 2**32 - 1


def _depth(value: Any, limit: int = MAX_DEPTH) -> Any:
    """Refuse free-form JSON nested deeper than `limit` (a schema, content blocks, tool definitions)."""
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            if level > limit:
                raise ValueError(f"nested deeper than {limit} levels")
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return value


JSONObject = Annotated[dict[str, Any], AfterValidator(_depth)]
Blocks = Annotated[list[JSONObject], Field(max_length=MAX_BLOCKS)]

# ---------------------------------------------------------------------------------------------
# Arguments


class ToolCallFunction(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    type: Literal["function"]
    function: ToolCallFunction


# An OpenAI chat message as the caller wrote it; other keys pass through untouched.
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool"]
    content: str | Blocks | None = None
    # Typed so that a malformed one is the caller's validation error, not the deployment's 500.
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=MAX_TOOLS)] | None = None


# An Anthropic message: a user or assistant turn, text or content blocks.
class AnthropicMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str | Blocks


# Advertised schemas are portable (tests/test_schema_portability.py): a union is `anyOf` of whole
# schemas, never a `"type"` list, and every array types its items. They say what a model needs to
# choose a value (a type, a range like temperature's); the limits that only guard the server (list
# lengths, integer widths, positive counts) are validated, and named in the error when exceeded,
# but not advertised: every character of `tools/list` is context. Every optional argument also
# accepts null (`gguf_mcp.schemas.accept_null`).
_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
_OBJECTS = {"type": "array", "items": {"type": "object"}}
_STRINGS = {"type": "array", "items": _STRING}

_MESSAGES = Field(min_length=1, max_length=MAX_MESSAGES)
ChatMessages = Annotated[list[ChatMessage], _MESSAGES, WithJsonSchema(_OBJECTS)]
AnthropicMessages = Annotated[list[AnthropicMessage], _MESSAGES, WithJsonSchema(_OBJECTS)]


DeploymentArg = Annotated[str | None, Field()]  # its schema becomes the enum of configured names
Deadline = Annotated[float | None, Field(gt=0), WithJsonSchema({"type": "number", "description": "Seconds"})]
Count = Annotated[int, Field(ge=1, le=INT32), WithJsonSchema(_INTEGER)]
Temperature = Annotated[float | None, Field(ge=0, le=2), WithJsonSchema({"type": "number", "maximum": 2})]
TopP = Annotated[float | None, Field(ge=0, le=1), WithJsonSchema({"type": "number", "maximum": 1})]
Seed = Annotated[int | None, Field(ge=-1, le=UINT32), WithJsonSchema(_INTEGER)]
Tools = Annotated[list[JSONObject] | None, Field(max_length=MAX_TOOLS), WithJsonSchema(_OBJECTS)]
Stop = Annotated[
    Annotated[list[str], Field(max_length=MAX_STOP)] | str | None, WithJsonSchema({"anyOf": [_STRING, _STRINGS]})
]

# ---------------------------------------------------------------------------------------------
# Results


class Embedding(BaseModel):
    index: int
    embedding: list[float]


class EmbedUsage(BaseModel):
    prompt_tokens: int | None = None
    total_tokens: int | None = None


class EmbedResult(BaseModel):
    embeddings: list[Embedding]
    dimensions: int
    usage: EmbedUsage | None = None
    model: str | None = None
    deployment: str


# ---------------------------------------------------------------------------------------------
# Errors: where an error becomes what the agent reads (its words: `gguf_mcp.errors`)


class GGUFTool(Tool):
    """The SDK's tool, and the one place an error becomes what the agent reads: a `GGUFMCPError` as
    its own text, invalid arguments one line per argument (not pydantic's dump), each through
    `error_text`. Anything else is a bug, which the SDK reports without details."""

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        try:
            return await super().run(arguments, context, convert_result)
        except ToolError as exc:  # the SDK's wrapper: what went wrong is its cause
            cause = exc.__cause__
            if isinstance(cause, ValidationError):  # the SDK's documented cause of a bad call
                text = invalid_arguments(self.name, cause, self.parameters)
            elif isinstance(cause, GGUFMCPError):
                text = f"Error executing tool {self.name}: {cause}"
            else:
                raise
            redactor = context.request_context.lifespan_context.upstream.redactor
            raise ToolError(error_text(text, redactor)) from None


# ---------------------------------------------------------------------------------------------
# Tools


async def list_models(ctx: Ctx, deployment: DeploymentArg = None) -> Annotated[CallToolResult, ModelsResult]:
    """The deployments and their models (id, context size, metadata)."""
    state = ctx.request_context.lifespan_context
    targets = [state.deployment(deployment)] if deployment else deployments_for(state, current_caller(state))
    found = await query_models(state.upstream, targets, state.settings.default_deployment)
    lines = []
    for d in found:
        head = f"{d.deployment}{' (default)' if d.default else ''}"
        if d.error:
            lines.append(f"{head}: error: {d.error}")
        for m in d.models:
            ctx_size = f", context {m.context_size} tokens" if m.context_size else ""
            lines.append(f"{head}: {m.id}{ctx_size}")
        if d.description:
            lines.append(f"  {d.description}")
    return _result("\n".join(lines), ModelsResult(deployments=found), is_error=all(d.error for d in found))


async def chat(
    ctx: Ctx,
    messages: ChatMessages,
    deployment: DeploymentArg = None,
    max_tokens: Count | None = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    stop: Stop = None,
    seed: Seed = None,
    tools: Tools = None,
    tool_choice: str | JSONObject | None = None,
    response_format: Annotated[
        JSONObject | None, Field(description='e.g. {"type":"json_schema","json_schema":{"schema":{}}}')
    ] = None,
    deadline: Deadline = None,
) -> Annotated[CallToolResult, ChatResult]:
    """Chat with the deployed model (OpenAI chat completions)."""
    body = {"messages": [m.model_dump(exclude_unset=True) for m in messages]}
    optional = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "stop": stop,
        "seed": seed,
        "tools": tools,
        "tool_choice": tool_choice,
        "response_format": response_format,
    }
    return await _generate(ctx, "chat", OPENAI_CHAT, deployment, body, optional, deadline)


async def messages(
    ctx: Ctx,
    messages: AnthropicMessages,
    max_tokens: Count,
    deployment: DeploymentArg = None,
    system: Annotated[str | Blocks | None, WithJsonSchema({"anyOf": [_STRING, _OBJECTS]})] = None,
    temperature: Annotated[float | None, Field(ge=0, le=1), WithJsonSchema({"type": "number", "maximum": 1})] = None,
    top_p: TopP = None,
    top_k: Count | None = None,
    stop_sequences: Annotated[list[str] | None, Field(max_length=MAX_STOP), WithJsonSchema(_STRINGS)] = None,
    tools: Tools = None,
    tool_choice: JSONObject | None = None,
    deadline: Deadline = None,
) -> Annotated[CallToolResult, MessagesResult]:
    """Chat with the deployed model (Anthropic Messages API)."""
    body = {"max_tokens": max_tokens, "messages": [m.model_dump() for m in messages]}
    optional = {
        "system": system,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "stop_sequences": stop_sequences,
        "tools": tools,
        "tool_choice": tool_choice,
    }
    return await _generate(ctx, "messages", ANTHROPIC_MESSAGES, deployment, body, optional, deadline)


async def complete(
    ctx: Ctx,
    prompt: Annotated[str, Field(min_length=1), WithJsonSchema(_STRING)],
    deployment: DeploymentArg = None,
    max_tokens: Count | None = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    stop: Stop = None,
    seed: Seed = None,
    deadline: Deadline = None,
) -> Annotated[CallToolResult, CompletionResult]:
    """Continue a raw prompt (OpenAI completions, no chat template)."""
    optional = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "stop": stop, "seed": seed}
    return await _generate(ctx, "complete", OPENAI_COMPLETION, deployment, {"prompt": prompt}, optional, deadline)


async def embed(
    ctx: Ctx,
    input: Annotated[
        str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=MAX_INPUTS)],
        Field(min_length=1),
        WithJsonSchema({"anyOf": [_STRING, _STRINGS]}),
    ],
    deployment: DeploymentArg = None,
) -> Annotated[CallToolResult, EmbedResult]:
    """Embed texts (OpenAI embeddings)."""
    state = ctx.request_context.lifespan_context
    dep = state.deployment(deployment)
    async with _admitted(ctx, dep, "embed") as call:
        try:
            # No "model": llama-server then names the deployed model in its answer (sent "local", it echoes that).
            data = reported(call, await state.upstream.post(dep, EMBEDDINGS, {"input": input}))
        except NotSupported as exc:
            raise no_embeddings(dep.name, exc) from None
    try:
        vectors = sorted(
            (Embedding(index=item["index"], embedding=item["embedding"]) for item in data["data"]),
            key=lambda v: v.index,
        )
        result = EmbedResult(
            embeddings=vectors,
            dimensions=len(vectors[0].embedding) if vectors else 0,
            usage=usage(EmbedUsage, data),
            model=data.get("model"),
            deployment=dep.name,
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise unexpected_shape(dep.name, "an embeddings response without float vectors") from None
    first = ", ".join(f"{x:.4f}" for x in vectors[0].embedding[:4]) if vectors else ""
    text = (
        f"{len(vectors)} embedding(s) of {result.dimensions} dimensions from {dep.name!r} "
        f"(first vector starts [{first}, ...]); the full vectors are in the structured result."
    )
    return _result(text, result)


# ---------------------------------------------------------------------------------------------
# Helpers


async def _generate(
    ctx: Ctx,
    tool: str,
    dialect: Dialect,
    deployment: str | None,
    body: dict[str, Any],
    optional: dict[str, Any],
    deadline: float | None,
) -> CallToolResult:
    """The common path of chat, messages and complete: admit, send, read, note incomplete or cut output."""
    state = ctx.request_context.lifespan_context
    dep = state.deployment(deployment)
    # Unset arguments leave the deployment's defaults alone.
    body = {"model": "local", **body, **{k: v for k, v in optional.items() if v is not None}}
    deadline = deadline or state.settings.deadline
    async with _admitted(ctx, dep, tool, max_tokens=body.get("max_tokens"), deadline=deadline) as call:
        if call.max_tokens is not None:
            body["max_tokens"] = call.max_tokens  # the client's cap
        answer = await generate(ctx, state.upstream, dep, dialect, body, call, deadline=deadline)
        reading = dialect.read(answer.data, dep.name)
    return _result(reading.text + _notes(answer.deadline, reading.cut_by_max_tokens, call), reading.result)


def _notes(deadline: float | None, cut: bool, call: Call) -> str:
    """What the agent must know about the text: stopped at the deadline, cut at max_tokens, a lowered max_tokens."""
    notes = []
    if deadline:
        notes.append(
            f"[Incomplete: stopped at the {deadline:g} s deadline. Call again with a longer deadline, or ask to "
            "continue from here.]"
        )
    elif cut:
        cap = f"max_tokens={call.max_tokens}" if call.max_tokens else "the deployment's token limit"
        notes.append(f"[Output cut off: it reached {cap}. Call again with a larger max_tokens, or ask to continue.]")
    if call.max_tokens_note:
        notes.append(call.max_tokens_note)
    return "".join(f"\n\n{note}" for note in notes)


def _admitted(
    ctx: Ctx, dep: Deployment, tool: str, *, max_tokens: int | None = None, deadline: float | None = None
) -> AbstractAsyncContextManager[Call]:
    """The call admitted by the fair share (its caller's limits, a slot of `dep`), recorded when it ends."""
    state = ctx.request_context.lifespan_context
    return state.fairshare.call(
        current_caller(state),
        dep,
        tool,
        # Over HTTP the request id of the logs and X-Request-Id; over stdio the call's JSON-RPC id.
        request_id=request_id.get() or ctx.request_id,
        max_tokens=max_tokens,
        deadline=deadline,
        on_wait=waiting_notices(ctx, dep.name),
    )


def _result(text: str, structured: BaseModel, *, is_error: bool = False) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=structured.model_dump(mode="json", exclude_none=True),
        is_error=is_error,
    )


# openWorldHint is true unless said otherwise (the MCP specification's default): not repeated.
READ_ONLY = ToolAnnotations(read_only_hint=True)
TOOLS = (list_models, chat, messages, complete, embed)


def build_tools(settings: Settings) -> list[Tool]:
    """The selected tools, their `deployment` argument listing the configured names."""
    names = list(settings.deployments)
    built = []
    for fn in TOOLS:
        if fn.__name__ not in settings.tools:
            continue
        tool = GGUFTool.from_function(fn, annotations=READ_ONLY)
        # With one deployment there is nothing to choose: the argument stays accepted, unadvertised.
        if len(names) > 1:
            tool.parameters["properties"]["deployment"] = {"type": "string", "enum": names}
        else:
            del tool.parameters["properties"]["deployment"]
        compact(tool.parameters)
        accept_null(tool.parameters)
        output = tool.fn_metadata.output_schema
        if output is not None:
            compact(output)
            # Results describe themselves; the schema names the top-level fields.
            prune(output, levels=1)
        built.append(tool)
    return built
