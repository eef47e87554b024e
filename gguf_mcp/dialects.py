"""The upstream APIs, each described once: every route a deployment serves, how it is spoken to
(auth header, extra headers, stream options, the event that ends its stream), and for the three
generation dialects how a stream assembles and how an answer reads.

Adding a dialect touches this room only: `gguf_mcp.upstream` sends whatever an `Endpoint` says,
and `gguf_mcp.generation` streams whatever a `Dialect` assembles. `chat`, `messages` and
`complete` differ only in the dialect they hand over. Knows the upstream APIs, not MCP.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from gguf_mcp.errors import unexpected_shape
from gguf_mcp.streams import Assembler, ChatStream, CompletionStream, MessagesStream

JSONObject = dict[str, Any]

ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True)
class Endpoint:
    """One route of a deployment and how it is spoken to."""

    route: str
    auth: Literal["bearer", "x-api-key"] = "bearer"
    """How the key travels: `Authorization: Bearer` (OpenAI routes) or `x-api-key` (Anthropic)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Sent with every request to the route (e.g. `anthropic-version`)."""
    stream_fields: Mapping[str, Any] = field(default_factory=dict)
    """Added to a streamed request's body (OpenAI's `stream_options`, asking for the usage at the end)."""
    done_data: str | None = None
    """An event whose data is exactly this (not JSON) ends the stream (OpenAI's `[DONE]`)."""
    final_type: str | None = None
    """An event whose JSON `type` is this is the stream's last (Anthropic's `message_stop`)."""

    def ends_with(self, data_text: str, data: JSONObject | None) -> bool:
        """Whether this event (its raw data, and its JSON once parsed) is the stream's final one."""
        if data is None:
            return self.done_data is not None and data_text == self.done_data
        return self.final_type is not None and data.get("type") == self.final_type


_USAGE_AT_END = {"stream_options": {"include_usage": True}}

MODELS = Endpoint("/v1/models")
PROPS = Endpoint("/props")
"""llama-server's own settings (`total_slots`: its --parallel); a gateway may not serve it."""
EMBEDDINGS = Endpoint("/v1/embeddings")
CHAT = Endpoint("/v1/chat/completions", stream_fields=_USAGE_AT_END, done_data="[DONE]")
COMPLETIONS = Endpoint("/v1/completions", stream_fields=_USAGE_AT_END, done_data="[DONE]")
MESSAGES = Endpoint(
    "/v1/messages", auth="x-api-key", headers={"anthropic-version": ANTHROPIC_VERSION}, final_type="message_stop"
)


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


@dataclass(frozen=True)
class Reading:
    """An answer read: the typed result, the text the agent reads, and whether max_tokens cut it."""

    result: BaseModel
    text: str
    cut_by_max_tokens: bool


@dataclass(frozen=True)
class Dialect:
    """One generation API: its endpoint, how its stream assembles, how its answer reads."""

    endpoint: Endpoint
    assembler: Callable[[], Assembler]
    read_answer: Callable[[Any, str], Reading]
    what: str
    """The answer's shape, for an error when it is not that (e.g. "a chat response with choices")."""

    def read(self, data: Any, deployment: str) -> Reading:
        try:
            return self.read_answer(data, deployment)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            raise unexpected_shape(deployment, f"an answer that is not {self.what}") from None


def usage(model: type[BaseModel], data: Any) -> Any:
    found = data.get("usage")
    if not isinstance(found, dict):
        return None
    return model.model_validate({k: v for k, v in found.items() if isinstance(v, int) and not isinstance(v, bool)})


def reported_tokens(data: Any) -> tuple[int | None, int | None]:
    """The prompt and completion tokens an answer's `usage` reports, in either dialect's names
    (OpenAI's `prompt_tokens`/`completion_tokens`, Anthropic's `input_tokens`/`output_tokens`)."""
    found = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(found, dict):
        return None, None
    return _count(found, "prompt_tokens", "input_tokens"), _count(found, "completion_tokens", "output_tokens")


def _count(usage: dict[str, Any], *names: str) -> int | None:
    value = next((usage[name] for name in names if name in usage), None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _read_chat(data: Any, deployment: str) -> Reading:
    choice = data["choices"][0]
    message = choice.get("message") or {}
    result = ChatResult(
        text=message.get("content") or "",
        finish_reason=choice.get("finish_reason"),
        tool_calls=message.get("tool_calls") or None,
        reasoning=message.get("reasoning_content") or None,
        usage=usage(ChatUsage, data),
        model=data.get("model"),
        deployment=deployment,
    )
    text = result.text
    for call in result.tool_calls or []:
        fn = call.get("function") or {}
        text += f"\n[tool call {call.get('id', '')}: {fn.get('name')}({fn.get('arguments', '')})]"
    return Reading(result, text, result.finish_reason == "length")


def _read_messages(data: Any, deployment: str) -> Reading:
    content = data["content"]
    result = MessagesResult(
        text="".join(b.get("text", "") for b in content if b.get("type") == "text"),
        content=content,
        stop_reason=data.get("stop_reason"),
        stop_sequence=data.get("stop_sequence"),
        usage=usage(MessagesUsage, data),
        model=data.get("model"),
        deployment=deployment,
    )
    text = result.text
    for block in result.content:
        if block.get("type") == "tool_use":
            text += f"\n[tool_use {block.get('id', '')}: {block.get('name')}({json.dumps(block.get('input'))})]"
    return Reading(result, text, result.stop_reason == "max_tokens")


def _read_completion(data: Any, deployment: str) -> Reading:
    choice = data["choices"][0]
    result = CompletionResult(
        text=choice.get("text") or "",
        finish_reason=choice.get("finish_reason"),
        usage=usage(ChatUsage, data),
        model=data.get("model"),
        deployment=deployment,
    )
    return Reading(result, result.text, result.finish_reason == "length")


OPENAI_CHAT = Dialect(CHAT, ChatStream, _read_chat, "a chat completion with choices")
ANTHROPIC_MESSAGES = Dialect(MESSAGES, MessagesStream, _read_messages, "a message with content blocks")
OPENAI_COMPLETION = Dialect(COMPLETIONS, CompletionStream, _read_completion, "a text completion with choices")
