"""The SSE parser and the stream assemblers, on the byte and event level.

End-to-end tests check them against llama.cpp's real streams; these pin the edge cases a real
server rarely produces on demand (odd chunking, CRLF, comments, oversized events, tool calls).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gguf_mcp.streams import ChatStream, EventTooLarge, MessagesStream, sse_events


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def parse(*parts: bytes, max_event: int = 1024) -> list[tuple[str, str]]:
    return [event async for event in sse_events(chunks(*parts), max_event)]


async def test_events_split_anywhere_across_chunks_parse_the_same() -> None:
    stream = b'data: {"a":1}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\ndata: [DONE]\n\n'
    whole = await parse(stream)
    assert whole == [("message", '{"a":1}'), ("message_stop", '{"type":"message_stop"}'), ("message", "[DONE]")]
    for cut in range(1, len(stream)):
        assert await parse(stream[:cut], stream[cut:]) == whole
    assert await parse(*(bytes([b]) for b in stream)) == whole


async def test_crlf_comments_ids_and_multiline_data() -> None:
    stream = b": keep-alive\r\nid: 7\r\nretry: 100\r\ndata: line one\r\ndata:line two\r\n\r\n"
    assert await parse(stream) == [("message", "line one\nline two")]


async def test_multibyte_text_split_between_chunks_survives() -> None:
    encoded = 'data: {"t":"héllo ✓"}\n\n'.encode()
    cut = encoded.index("✓".encode()) + 1
    assert await parse(encoded[:cut], encoded[cut:]) == [("message", '{"t":"héllo ✓"}')]


async def test_an_event_cut_off_by_the_end_of_the_stream_is_dropped() -> None:
    assert await parse(b"data: complete\n\ndata: half") == [("message", "complete")]


async def test_an_oversized_event_is_refused_before_it_is_buffered_whole() -> None:
    with pytest.raises(EventTooLarge):
        await parse(b"data: " + b"x" * 600, b"x" * 600, max_event=1024)
    with pytest.raises(EventTooLarge):
        await parse(b"data: " + b"x" * 600 + b"\n", b"data: " + b"y" * 600 + b"\n", max_event=1024)


def test_chat_stream_merges_tool_call_fragments_by_index() -> None:
    stream = ChatStream()
    chunk = {"model": "m", "choices": [{"index": 0, "delta": {}}]}
    for delta in (
        {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "get_", "arguments": '{"ci'}}]},
        {"tool_calls": [{"index": 0, "function": {"name": "weather", "arguments": 'ty":"Oslo"}'}}]},
        {"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "now", "arguments": "{}"}}]},
    ):
        stream.add({**chunk, "choices": [{"index": 0, "delta": delta}]})
    stream.add({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    body = stream.response()
    message = body["choices"][0]["message"]
    assert message["tool_calls"] == [
        {"type": "function", "id": "c1", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        {"type": "function", "id": "c2", "function": {"name": "now", "arguments": "{}"}},
    ]
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["model"] == "m"


def test_chat_stream_keeps_reasoning_apart_from_the_answer() -> None:
    stream = ChatStream()
    assert stream.add({"choices": [{"index": 0, "delta": {"reasoning_content": "think"}}]}) == "think"
    assert stream.add({"choices": [{"index": 0, "delta": {"content": "answer"}}]}) == "answer"
    message = stream.response()["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"]) == ("answer", "think")
    assert stream.tokens == 2


def test_messages_stream_rebuilds_tool_use_input_from_json_fragments() -> None:
    stream = MessagesStream()
    for event in (
        {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 9, "output_tokens": 0}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me look."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "w"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"ci'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": 'ty":1}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}},
        {"type": "message_stop"},
    ):
        stream.add(event)
    body = stream.response()
    assert body["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "t1", "name": "w", "input": {"city": 1}},
    ]
    assert body["stop_reason"] == "tool_use"
    assert body["usage"] == {"input_tokens": 9, "output_tokens": 5}
    assert body["model"] == "m"


def test_a_stream_cut_by_a_deadline_reports_the_tokens_it_counted() -> None:
    chat, messages = ChatStream(), MessagesStream()
    for token in "abc":
        chat.add({"choices": [{"index": 0, "delta": {"content": token}}]})
        messages.add({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": token}})
    assert chat.response("deadline")["usage"] == {"completion_tokens": 3}
    assert chat.response("deadline")["choices"][0]["finish_reason"] == "deadline"
    assert messages.response("deadline")["usage"]["output_tokens"] == 3
    assert messages.response("deadline")["stop_reason"] == "deadline"
