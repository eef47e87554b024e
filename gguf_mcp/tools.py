"""The MCP tools: thin adapters from typed arguments to one upstream call and a typed result.

Descriptions are written for the model that reads them, and kept short: every character of
`tools/list` is context the agent pays for.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import aclosing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from gguf_mcp.catalog import ModelInfo, parse_models
from gguf_mcp.config import Deployment, Settings
from gguf_mcp.errors import GGUFMCPError, InvalidResponse, NotSupported, UnknownDeployment
from gguf_mcp.streams import ChatStream, CompletionStream, MessagesStream
from gguf_mcp.upstream import CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES, MODELS, UpstreamClient


@dataclass(frozen=True)
class AppState:
    """What the lifespan hands every tool call."""

    settings: Settings
    upstream: UpstreamClient

    def deployment(self, name: str | None) -> Deployment:
        deployments = self.settings.deployments
        if name is None:
            return deployments[self.settings.default_deployment]
        try:
            return deployments[name]
        except KeyError:
            raise ToolError(str(UnknownDeployment(name, deployments))) from None


Ctx = Context[AppState, Any]

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
    content: str | list[dict[str, Any]] | None = None
    # Typed so that a malformed one is the caller's validation error, not the deployment's 500.
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] | None = None


# An Anthropic message: a user or assistant turn, text or content blocks.
class AnthropicMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


DeploymentArg = Annotated[str | None, Field()]  # its schema becomes the enum of configured names
Deadline = Annotated[float | None, Field(gt=0, description="Seconds; then partial output.")]
MaxTokens = Annotated[int | None, Field(ge=1)]
Temperature = Annotated[float | None, Field(ge=0, le=2)]
TopP = Annotated[float | None, Field(ge=0, le=1)]
JSONObject = dict[str, Any]
# Schemas say the common form in fewer characters; validation still takes every documented one.
Stop = Annotated[list[str] | str | None, WithJsonSchema({"type": ["array", "string"]})]

# ---------------------------------------------------------------------------------------------
# Results


class DeploymentModels(BaseModel):
    deployment: str
    description: str | None = None
    default: bool = False
    models: list[ModelInfo] = []
    error: str | None = None


class ModelsResult(BaseModel):
    deployments: list[DeploymentModels]


class ChatUsage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class ChatResult(BaseModel):
    text: str
    finish_reason: str | None = None
    tool_calls: list[JSONObject] | None = None
    reasoning: str | None = None
    usage: ChatUsage | None = None
    model: str | None = None
    deployment: str


class MessagesUsage(BaseModel):
    input_tokens: int | None = None
    output_tokens: int | None = None


class MessagesResult(BaseModel):
    text: str
    content: list[JSONObject]
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: MessagesUsage | None = None
    model: str | None = None
    deployment: str


class CompletionResult(BaseModel):
    text: str
    finish_reason: str | None = None
    usage: ChatUsage | None = None
    model: str | None = None
    deployment: str


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
# Tools


async def query_models(state: AppState, targets: list[Deployment]) -> list[DeploymentModels]:
    """Every target's models, queried concurrently; one failure is reported in its entry only."""
    found = [
        DeploymentModels(
            deployment=d.name, description=d.description or None, default=d.name == state.settings.default_deployment
        )
        for d in targets
    ]

    async def query(entry: DeploymentModels, dep: Deployment) -> None:
        try:
            entry.models = parse_models(dep, await state.upstream.get(dep, MODELS))
        except GGUFMCPError as exc:
            entry.error = str(exc)

    async with anyio.create_task_group() as tg:
        for entry, dep in zip(found, targets, strict=True):
            tg.start_soon(query, entry, dep)
    return found


async def list_models(ctx: Ctx, deployment: DeploymentArg = None) -> Annotated[CallToolResult, ModelsResult]:
    """The deployments and their models (id, context size, metadata)."""
    state = ctx.request_context.lifespan_context
    targets = [state.deployment(deployment)] if deployment else list(state.settings.deployments.values())
    found = await query_models(state, targets)
    result = ModelsResult(deployments=found)
    failed = all(d.error for d in found)
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
    return _result("\n".join(lines), result, is_error=failed)


async def chat(
    ctx: Ctx,
    messages: Annotated[
        list[ChatMessage],
        Field(min_length=1, description='e.g. [{"role":"user","content":"Hi"}]'),
        WithJsonSchema({"type": "array"}),
    ],
    deployment: DeploymentArg = None,
    max_tokens: MaxTokens = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    stop: Stop = None,
    seed: int | None = None,
    tools: list[JSONObject] | None = None,
    tool_choice: Annotated[str | JSONObject | None, WithJsonSchema({"type": ["string", "object"]})] = None,
    response_format: Annotated[
        JSONObject | None, Field(description='e.g. {"type":"json_schema","json_schema":{"schema":{}}}')
    ] = None,
    deadline: Deadline = None,
) -> Annotated[CallToolResult, ChatResult]:
    """Chat with the deployed model (OpenAI chat completions)."""
    state = ctx.request_context.lifespan_context
    dep = state.deployment(deployment)
    body: dict[str, Any] = {"model": "local", "messages": [m.model_dump(exclude_unset=True) for m in messages]}
    _put(
        body,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=stop,
        seed=seed,
        tools=tools,
        tool_choice=tool_choice,
        response_format=response_format,
    )
    data, partial = await _generate(ctx, state, dep, CHAT, body, ChatStream(), deadline, max_tokens)
    try:
        choice = data["choices"][0]
        message = choice.get("message") or {}
        result = ChatResult(
            text=message.get("content") or "",
            finish_reason=choice.get("finish_reason"),
            tool_calls=message.get("tool_calls") or None,
            reasoning=message.get("reasoning_content") or None,
            usage=_usage(ChatUsage, data),
            model=data.get("model"),
            deployment=dep.name,
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise _unexpected(dep, "a chat response without choices") from None
    text = result.text
    for call in result.tool_calls or []:
        fn = call.get("function") or {}
        text += f"\n[tool call {call.get('id', '')}: {fn.get('name')}({fn.get('arguments', '')})]"
    return _finish(text, result, partial, result.finish_reason == "length", max_tokens)


async def messages(
    ctx: Ctx,
    messages: Annotated[
        list[AnthropicMessage],
        Field(min_length=1, description='e.g. [{"role":"user","content":"Hi"}]'),
        WithJsonSchema({"type": "array"}),
    ],
    max_tokens: Annotated[int, Field(ge=1)],
    deployment: DeploymentArg = None,
    system: Annotated[str | list[JSONObject] | None, WithJsonSchema({"type": ["string", "array"]})] = None,
    temperature: Annotated[float | None, Field(ge=0, le=1)] = None,
    top_p: TopP = None,
    top_k: Annotated[int | None, Field(ge=1)] = None,
    stop_sequences: list[str] | None = None,
    tools: list[JSONObject] | None = None,
    tool_choice: JSONObject | None = None,
    deadline: Deadline = None,
) -> Annotated[CallToolResult, MessagesResult]:
    """Chat with the deployed model (Anthropic Messages API)."""
    state = ctx.request_context.lifespan_context
    dep = state.deployment(deployment)
    body: dict[str, Any] = {
        "model": "local",
        "max_tokens": max_tokens,
        "messages": [m.model_dump() for m in messages],
    }
    _put(
        body,
        system=system,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        stop_sequences=stop_sequences,
        tools=tools,
        tool_choice=tool_choice,
    )
    data, partial = await _generate(ctx, state, dep, MESSAGES, body, MessagesStream(), deadline, max_tokens)
    try:
        content = data["content"]
        result = MessagesResult(
            text="".join(b.get("text", "") for b in content if b.get("type") == "text"),
            content=content,
            stop_reason=data.get("stop_reason"),
            stop_sequence=data.get("stop_sequence"),
            usage=_usage(MessagesUsage, data),
            model=data.get("model"),
            deployment=dep.name,
        )
    except (KeyError, TypeError, AttributeError, ValueError):
        raise _unexpected(dep, "a messages response without content") from None
    text = result.text
    for block in result.content:
        if block.get("type") == "tool_use":
            text += f"\n[tool_use {block.get('id', '')}: {block.get('name')}({json.dumps(block.get('input'))})]"
    return _finish(text, result, partial, result.stop_reason == "max_tokens", max_tokens)


async def complete(
    ctx: Ctx,
    prompt: Annotated[str, Field(min_length=1)],
    deployment: DeploymentArg = None,
    max_tokens: MaxTokens = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    stop: Stop = None,
    seed: int | None = None,
    deadline: Deadline = None,
) -> Annotated[CallToolResult, CompletionResult]:
    """Continue a raw prompt (OpenAI completions, no chat template)."""
    state = ctx.request_context.lifespan_context
    dep = state.deployment(deployment)
    body: dict[str, Any] = {"model": "local", "prompt": prompt}
    _put(body, max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop, seed=seed)
    data, partial = await _generate(ctx, state, dep, COMPLETIONS, body, CompletionStream(), deadline, max_tokens)
    try:
        choice = data["choices"][0]
        result = CompletionResult(
            text=choice.get("text") or "",
            finish_reason=choice.get("finish_reason"),
            usage=_usage(ChatUsage, data),
            model=data.get("model"),
            deployment=dep.name,
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise _unexpected(dep, "a completion response without choices") from None
    text = result.text
    return _finish(text, result, partial, result.finish_reason == "length", max_tokens)


async def embed(
    ctx: Ctx,
    input: Annotated[str | list[str], Field(min_length=1), WithJsonSchema({"type": ["string", "array"]})],
    deployment: DeploymentArg = None,
) -> Annotated[CallToolResult, EmbedResult]:
    """Embed a text or a list of texts (OpenAI embeddings)."""
    state = ctx.request_context.lifespan_context
    dep = state.deployment(deployment)
    if isinstance(input, list) and (not input or not all(input)):
        raise ToolError("input: give a non-empty text, or a non-empty list of non-empty texts.")
    try:
        data = await state.upstream.post(dep, EMBEDDINGS, {"model": "local", "input": input})
    except NotSupported as exc:
        raise ToolError(
            f"Deployment {dep.name!r} does not serve embeddings: its model or server is not set up for them "
            f"(llama-server needs --embeddings). Use a deployment of an embedding model. ({exc})"
        ) from None
    except GGUFMCPError as exc:
        raise ToolError(str(exc)) from None
    try:
        vectors = [Embedding(index=item["index"], embedding=item["embedding"]) for item in data["data"]]
        vectors.sort(key=lambda v: v.index)
        result = EmbedResult(
            embeddings=vectors,
            dimensions=len(vectors[0].embedding) if vectors else 0,
            usage=_usage(EmbedUsage, data),
            model=data.get("model"),
            deployment=dep.name,
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise _unexpected(dep, "an embeddings response without float vectors") from None
    first = ", ".join(f"{x:.4f}" for x in vectors[0].embedding[:4]) if vectors else ""
    text = (
        f"{len(vectors)} embedding(s) of {result.dimensions} dimensions from {dep.name!r} "
        f"(first vector starts [{first}, ...]); the full vectors are in the structured result."
    )
    return _result(text, result)


# ---------------------------------------------------------------------------------------------
# Helpers


def _put(body: dict[str, Any], **optional: Any) -> None:
    """Copy the arguments the caller set; unset ones leave the deployment's defaults alone."""
    body.update((k, v) for k, v in optional.items() if v is not None)


async def _call(state: AppState, dep: Deployment, route: str, body: dict[str, Any]) -> Any:
    try:
        return await state.upstream.post(dep, route, body)
    except GGUFMCPError as exc:
        raise ToolError(str(exc)) from None


class _Progress:
    """`notifications/progress` as tokens arrive: the first at once, then at most every 0.1 s.

    Each message carries the text generated since the previous one, so a client that joins
    them gets the whole answer; `progress` counts tokens and only grows.
    """

    INTERVAL = 0.1

    def __init__(self, ctx: Ctx, total: int | None) -> None:
        self._ctx = ctx
        self._total = float(total) if total else None
        self._pending: list[str] = []
        self._last = -math.inf

    async def add(self, text: str, tokens: int) -> None:
        if text:
            self._pending.append(text)
            if time.monotonic() - self._last >= self.INTERVAL:
                await self.flush(tokens)

    async def flush(self, tokens: int) -> None:
        if self._pending:
            message = "".join(self._pending)
            self._pending.clear()
            self._last = time.monotonic()
            await self._ctx.report_progress(tokens, self._total, message)


async def _generate(
    ctx: Ctx,
    state: AppState,
    dep: Deployment,
    route: str,
    body: dict[str, Any],
    stream: ChatStream | MessagesStream | CompletionStream,
    deadline: float | None,
    max_tokens: int | None,
) -> tuple[Any, float | None]:
    """The deployment's answer as a non-streamed body, plus the deadline if it cut the answer short.

    Streams only when it buys something (a progress token, or a deadline that needs the partial
    text): a plain request is cheaper. Cancelling the call closes the upstream request.
    """
    meta = ctx.request_context.meta
    wants_progress = bool(meta) and meta.get("progress_token") is not None  # type: ignore[union-attr]
    deadline = deadline or state.settings.deadline
    if not wants_progress and deadline is None:
        return await _call(state, dep, route, body), None

    progress = _Progress(ctx, max_tokens) if wants_progress else None
    with anyio.move_on_after(deadline if deadline is not None else math.inf) as scope:
        try:
            async with aclosing(state.upstream.stream(dep, route, body)) as events:
                async for event in events:
                    new = stream.add(event)
                    if progress is not None:
                        await progress.add(new, stream.tokens)
        except GGUFMCPError as exc:
            partial = stream.text
            detail = f" Partial output ({stream.tokens} tokens): {partial}" if partial else ""
            raise ToolError(f"{exc}{detail}") from None
    if progress is not None:
        await progress.flush(stream.tokens)
    if scope.cancelled_caught:
        if not stream.tokens:
            raise ToolError(
                f"Deployment {dep.name!r} produced no output within the {deadline:g} s deadline. Try again, "
                "or raise the deadline."
            )
        return stream.response("deadline"), deadline
    return stream.response(), None


def _unexpected(dep: Deployment, what: str) -> ToolError:
    return ToolError(
        str(
            InvalidResponse(
                f"Deployment {dep.name!r} sent {what}. Check that the base URL points at a llama-server or GGUF "
                "Cloud deployment."
            )
        )
    )


def _finish(
    text: str, result: BaseModel, partial: float | None, cut_by_max_tokens: bool, max_tokens: int | None
) -> CallToolResult:
    """The result, its text saying when the output is incomplete (deadline) or cut (token limit)."""
    if partial:
        text += _deadline_note(partial)
    elif cut_by_max_tokens:
        text += _cut_note(max_tokens)
    return _result(text, result)


def _deadline_note(deadline: float) -> str:
    return (
        f"\n\n[Incomplete: stopped at the {deadline:g} s deadline. Call again with a longer deadline, or ask "
        "to continue from here.]"
    )


def _usage(model: type[ChatUsage] | type[MessagesUsage] | type[EmbedUsage], data: Any) -> Any:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    return model.model_validate({k: v for k, v in usage.items() if isinstance(v, int)})


def _cut_note(max_tokens: int | None) -> str:
    cap = f"max_tokens={max_tokens}" if max_tokens else "the deployment's token limit"
    return f"\n\n[Output cut off: it reached {cap}. Call again with a larger max_tokens, or ask to continue.]"


def _result(text: str, structured: BaseModel, *, is_error: bool = False) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=structured.model_dump(mode="json", exclude_none=True),
        is_error=is_error,
    )


READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=True)
TOOLS = (list_models, chat, messages, complete, embed)


def build_tools(settings: Settings) -> list[Tool]:
    """The selected tools, their `deployment` argument listing the configured names."""
    names = list(settings.deployments)
    built = []
    for fn in TOOLS:
        if fn.__name__ not in settings.tools:
            continue
        tool = Tool.from_function(fn, annotations=READ_ONLY)
        # With one deployment there is nothing to choose: the argument stays accepted, unadvertised.
        if len(names) > 1:
            tool.parameters["properties"]["deployment"] = {"type": "string", "enum": names}
        else:
            del tool.parameters["properties"]["deployment"]
        _compact(tool.parameters)
        output = tool.fn_metadata.output_schema
        if output is not None:
            _compact(output)
            # Results describe themselves; the schema names the fields, a level or two deep.
            _prune(output, levels=2 if fn is list_models else 1)
        built.append(tool)
    return built


def _prune(schema: dict[str, Any], levels: int) -> None:
    """Keep `levels` levels of nested properties; below that, objects and arrays keep only their type."""
    for prop in schema.get("properties", {}).values():
        if levels <= 1:
            for key in ("properties", "required", "items", "description"):
                prop.pop(key, None)
        else:
            _prune(prop.get("items", prop) if prop.get("type") == "array" else prop, levels - 1)


def _compact(schema: dict[str, Any]) -> None:
    """Shrink a generated schema without changing what it accepts from an agent that omits
    optional arguments: every character of `tools/list` is context the agent pays for.

    Drops titles and defaults, `"additionalProperties": true` (the default), the `null` branch
    of optional fields (omitting them means the same) and inlines `$defs`.
    """
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return walk(defs[node["$ref"].rsplit("/", 1)[1]])
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("title", "default") or (key == "additionalProperties" and value is True):
                continue
            out[key] = {k: walk(v) for k, v in value.items()} if key == "properties" else walk(value)
        if out.get("type") == "array" and out.get("items") == {"type": "object"}:
            del out["items"]  # "an array" says as much to the reader; arguments are validated anyway
        branches = out.get("anyOf")
        if branches and {"type": "null"} in branches:
            rest = [b for b in branches if b != {"type": "null"}]
            del out["anyOf"]
            out = {**rest[0], **out} if len(rest) == 1 else {"anyOf": rest, **out}
        return out

    compacted = walk(schema)
    schema.clear()
    schema.update(compacted)
