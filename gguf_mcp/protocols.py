"""The three generation protocols, each described once: its route, how its stream is assembled,
and how its answer becomes a typed result and a readable text.

`chat`, `messages` and `complete` differ only in these descriptions; the tools hand one to
`gguf_mcp.generation`, which sends, streams or not, and returns the answer in the shape the
protocol's non-streamed response has. Knows the upstream protocols, not MCP.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from gguf_mcp.errors import unexpected_shape
from gguf_mcp.streams import Assembler, ChatStream, CompletionStream, MessagesStream
from gguf_mcp.upstream import CHAT, COMPLETIONS, MESSAGES

JSONObject = dict[str, Any]


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
class Protocol:
    """One generation API: where it is, how its stream assembles, how its answer reads."""

    route: str
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


OPENAI_CHAT = Protocol(CHAT, ChatStream, _read_chat, "a chat completion with choices")
ANTHROPIC_MESSAGES = Protocol(MESSAGES, MessagesStream, _read_messages, "a message with content blocks")
OPENAI_COMPLETION = Protocol(COMPLETIONS, CompletionStream, _read_completion, "a text completion with choices")
