"""Assemble streamed answers (SSE events of either dialect) into the non-streamed response shape.

Tools parse one shape whichever way the answer arrived, so a streamed result is exactly the
result the same call would have given without streaming. Knows the upstream protocols, not MCP.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Protocol


class Assembler(Protocol):
    """Takes one protocol's stream events and rebuilds its non-streamed response."""

    tokens: int

    @property
    def text(self) -> str: ...

    def add(self, event: dict[str, Any]) -> str: ...

    def response(self, finish_reason: str | None = None, /) -> dict[str, Any]: ...


class EventTooLarge(Exception):
    """One server-sent event exceeded the size limit (a broken or hostile upstream)."""


async def sse_events(chunks: AsyncIterator[bytes], max_event: int) -> AsyncIterator[tuple[str, str]]:
    """Parse server-sent events from a byte stream into (event type, data) pairs.

    A few lines of our own rather than a library, because this must refuse an oversized event
    before buffering it whole. Lines end in LF or CRLF; `data:` lines join with newlines; comments
    and `id:`/`retry:` are ignored; an event cut off by the end of the stream is dropped, as the
    SSE specification says.
    """
    pending = b""
    kind, size = "", 0
    data: list[str] = []
    async for chunk in chunks:
        pending += chunk
        if b"\n" not in chunk:
            if len(pending) > max_event:
                raise EventTooLarge
            continue
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                if data:
                    yield kind or "message", "\n".join(data)
                kind, data, size = "", [], 0
                continue
            name, _, value = line.decode("utf-8", "replace").partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                data.append(value)
                size += len(value)
                if size > max_event:
                    raise EventTooLarge
            elif name == "event":
                kind = value
        if len(pending) > max_event:
            raise EventTooLarge


class ChatStream:
    """OpenAI `chat.completion.chunk` events -> a `chat.completion` body."""

    def __init__(self) -> None:
        self.tokens = 0
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self._model: str | None = None

    @property
    def text(self) -> str:
        return "".join(self._text)

    def add(self, chunk: dict[str, Any]) -> str:
        """Take one event; return the newly generated text (reasoning included) for progress."""
        self._model = chunk.get("model") or self._model
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        new = ""
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) == 0:
                new += self._take(choice)
                self._finish = choice.get("finish_reason") or self._finish
        return new

    def _take(self, choice: dict[str, Any]) -> str:
        delta = choice.get("delta") or {}
        new = ""
        if content := delta.get("content"):
            self._text.append(content)
            new += content
        if reasoning := delta.get("reasoning_content"):
            self._reasoning.append(reasoning)
            new += reasoning
        for call in delta.get("tool_calls") or ():
            self._merge_call(call)
        if content or reasoning or delta.get("tool_calls"):
            self.tokens += 1
        return new

    def _merge_call(self, part: dict[str, Any]) -> None:
        call = self._calls.setdefault(part.get("index", len(self._calls)), {"type": "function", "function": {}})
        if part.get("id"):
            call["id"] = part["id"]
        fn = part.get("function") or {}
        if fn.get("name"):
            call["function"]["name"] = call["function"].get("name", "") + fn["name"]
        if fn.get("arguments"):
            call["function"]["arguments"] = call["function"].get("arguments", "") + fn["arguments"]

    def response(self, finish_reason: str | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self._reasoning:
            message["reasoning_content"] = "".join(self._reasoning)
        if self._calls:
            message["tool_calls"] = [self._calls[i] for i in sorted(self._calls)]
        choice = {"index": 0, "message": message, "finish_reason": finish_reason or self._finish}
        # An answer cut short (deadline) never got its usage event: report the tokens counted.
        usage = self._usage or {"completion_tokens": self.tokens}
        return {"object": "chat.completion", "model": self._model, "choices": [choice], "usage": usage}


class CompletionStream(ChatStream):
    """OpenAI `text_completion` events -> a `text_completion` body."""

    def _take(self, choice: dict[str, Any]) -> str:
        text = choice.get("text") or ""
        if text:
            self._text.append(text)
            self.tokens += 1
        return text

    def response(self, finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "text": self.text, "finish_reason": finish_reason or self._finish}
        usage = self._usage or {"completion_tokens": self.tokens}
        return {"object": "text_completion", "model": self._model, "choices": [choice], "usage": usage}


class MessagesStream:
    """Anthropic Messages events -> a `message` body."""

    def __init__(self) -> None:
        self.tokens = 0
        self._blocks: dict[int, dict[str, Any]] = {}
        self._partial_json: dict[int, str] = {}
        self._message: dict[str, Any] = {}
        self._usage: dict[str, Any] = {}

    @property
    def text(self) -> str:
        return "".join(b.get("text", "") for b in self._ordered() if b.get("type") == "text")

    def _ordered(self) -> list[dict[str, Any]]:
        return [self._blocks[i] for i in sorted(self._blocks)]

    def add(self, event: dict[str, Any]) -> str:
        """Take one event; return the newly generated text (thinking included) for progress."""
        kind = event.get("type")
        if kind == "message_start":
            self._message = dict(event.get("message") or {})
            self._usage.update(self._message.pop("usage", None) or {})
        elif kind == "content_block_start":
            self._blocks[event.get("index", len(self._blocks))] = dict(event.get("content_block") or {})
        elif kind == "content_block_delta":
            return self._delta(event.get("index", 0), event.get("delta") or {})
        elif kind == "content_block_stop":
            index = event.get("index", 0)
            if index in self._partial_json:
                block = self._blocks.setdefault(index, {"type": "tool_use"})
                try:
                    block["input"] = json.loads(self._partial_json.pop(index) or "{}")
                except ValueError:
                    block["input"] = {}
        elif kind == "message_delta":
            self._message.update(event.get("delta") or {})
            self._usage.update(event.get("usage") or {})
        return ""

    def _delta(self, index: int, delta: dict[str, Any]) -> str:
        block = self._blocks.setdefault(index, {"type": "text", "text": ""})
        kind = delta.get("type")
        self.tokens += 1
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta.get("text", "")
            return str(delta.get("text", ""))
        if kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
            return str(delta.get("thinking", ""))
        if kind == "input_json_delta":
            self._partial_json[index] = self._partial_json.get(index, "") + delta.get("partial_json", "")
        elif kind == "signature_delta":
            block["signature"] = block.get("signature", "") + delta.get("signature", "")
        return ""

    def response(self, stop_reason: str | None = None) -> dict[str, Any]:
        body = {"type": "message", "role": "assistant", **self._message, "content": self._ordered()}
        if stop_reason:
            body["stop_reason"] = stop_reason
            # Cut short (deadline): no message_delta came with the final count.
            self._usage["output_tokens"] = self.tokens
        body["usage"] = self._usage
        return body
