"""Bad input, property-based: whatever an agent sends as tool arguments, gguf-mcp answers with a
result (never a crash, never a hang), rejects what it cannot forward with an error that says why,
and forwards to the deployment only bodies its protocol accepts.

Hypothesis draws the arguments (wrong types, huge strings, deep nesting, odd unicode, empty lists,
unknown deployment names) by mutating a valid call of each tool. All examples go through ONE
long-lived gguf-mcp process per transport: the async test holds the MCP session, and the
Hypothesis runner, in a worker thread, sends each call through `anyio.from_thread.run`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mcp import MCPError
from mcp.types import CallToolResult

from gguf_mcp.http import MAX_REQUEST_BODY
from tests.support.bridge import INITIALIZE, MCP_HEADERS, Bridge, http_server
from tests.support.calls import text_of
from tests.support.gateway import ACCOUNT_KEY, Gateway, RecordedRequest

DEPLOYMENTS = ("main", "spare")
USER = [{"role": "user", "content": "Hello there"}]
VALID: dict[str, dict[str, Any]] = {
    "list_models": {},
    "chat": {"messages": USER, "max_tokens": 2},
    "messages": {"messages": USER, "max_tokens": 2},
    "complete": {"prompt": "Once upon a time", "max_tokens": 2},
    "embed": {"input": "hello"},
}
ROUTES = {
    "list_models": "/v1/models",
    "chat": "/v1/chat/completions",
    "messages": "/v1/messages",
    "complete": "/v1/completions",
    "embed": "/v1/embeddings",
}
MAX_EXAMPLES = 500  # per transport: a few seconds each
CALL_TIMEOUT_S = 20.0

# --- What each route's protocol accepts (the oracle for "nothing garbage is forwarded") ----------
# Written from the OpenAI / Anthropic / llama-server request formats, not from gguf-mcp's models.

_STOP = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
_COMMON = {
    "model": {"const": "local"},
    # llama-server reads these into C integers: n_predict is int32, the seed uint32 (-1: random).
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "seed": {"type": "integer", "minimum": -1, "maximum": 2**32 - 1},
    "stream": {"const": True},
    "stream_options": {"type": "object"},
}
_OBJECTS = {"type": "array", "items": {"type": "object"}}
PROTOCOL: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "type": "object",
        "required": ["model", "messages"],
        "additionalProperties": False,
        "properties": {
            **_COMMON,
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["role"],
                    "properties": {
                        "role": {"enum": ["system", "user", "assistant", "tool"]},
                        "content": {"anyOf": [{"type": ["string", "null"]}, _OBJECTS]},
                    },
                },
            },
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "stop": _STOP,
            "tools": _OBJECTS,
            "tool_choice": {"type": ["string", "object"]},
            "response_format": {"type": "object"},
        },
    },
    "/v1/messages": {
        "type": "object",
        "required": ["model", "messages", "max_tokens"],
        "additionalProperties": False,
        "properties": {
            **_COMMON,
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["role", "content"],
                    "additionalProperties": False,
                    "properties": {
                        "role": {"enum": ["user", "assistant"]},
                        "content": {"anyOf": [{"type": "string"}, _OBJECTS]},
                    },
                },
            },
            "system": {"anyOf": [{"type": "string"}, _OBJECTS]},
            "temperature": {"type": "number", "minimum": 0, "maximum": 1},
            "top_k": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
            "stop_sequences": {"type": "array", "items": {"type": "string"}},
            "tools": _OBJECTS,
            "tool_choice": {"type": "object"},
        },
    },
    "/v1/completions": {
        "type": "object",
        "required": ["model", "prompt"],
        "additionalProperties": False,
        "properties": {
            **_COMMON,
            "prompt": {"type": "string", "minLength": 1},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "stop": _STOP,
        },
    },
    "/v1/embeddings": {
        "type": "object",
        "required": ["input"],  # llama-server needs no model: without one it names the deployed model
        "additionalProperties": False,
        "properties": {
            "model": {"const": "local"},
            "input": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                ]
            },
        },
    },
}

# --- Strategies -----------------------------------------------------------------------------------

ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\x1b[31mred",
        "\u202eevil",  # right-to-left override
        "\ufeffbom",
        "\u200b",  # zero-width space
        "e\u0301\u0301\u0301",  # stacked combining marks
        "🦙🧪👩‍👩‍👧",
        "\U0010ffff",
        "ﷺ𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "\r\n\t",
        '"}]\\',
        "null",
        "[redacted]",
    ]
)


def _repeat(unit: str, times: int) -> str:
    return unit * times


HUGE_TEXT = st.builds(_repeat, st.sampled_from(["x", "ä", "🦙", "ab\n"]), st.integers(50_000, 400_000))
TEXT = st.one_of(st.text(max_size=40), ODD_TEXT, HUGE_TEXT)


def _nest(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


# Nesting stays below the depth at which the SDK's stdio transport drops the message (see
# test_deeply_nested_arguments_get_an_answer_over_stdio).
DEEP = st.integers(1, 120).map(_nest)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),  # near every numeric bound: 0, 1, 2, negatives
    st.floats(-0.5, 2.5),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
VALUES = st.one_of(JSON, DEEP, st.just([]), st.just({}), st.just([{}]))
ROLES = st.one_of(st.sampled_from(["system", "user", "assistant", "tool", "developer", "USER", ""]), VALUES)
CONTENT = st.one_of(TEXT, st.none(), st.lists(st.dictionaries(st.text(max_size=8), JSON, max_size=3), max_size=3))
MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": ROLES, "content": CONTENT}),
    st.fixed_dictionaries({"role": ROLES}, optional={"content": VALUES}),
    VALUES,
)
DEPLOYMENT_NAMES = st.one_of(st.sampled_from(["main", "spare", "nope", "../main", "MAIN", "main ", ""]), TEXT, VALUES)


def typed(prop: dict[str, Any], *, spill: float) -> st.SearchStrategy[Any]:
    """Values of the advertised type; numbers within the advertised bounds widened by `spill` on
    each side (0: valid; more: what a model gets almost right)."""
    branches = prop.get("anyOf", [prop])  # an optional argument: its type, or null
    types = [branch.get("type") for branch in branches]
    bounds = {key: value for branch in branches for key, value in branch.items() if key != "type"}
    options: list[st.SearchStrategy[Any]] = [st.none()] if "null" in types else []
    if "number" in types or "integer" in types:
        low = bounds.get("minimum", bounds.get("exclusiveMinimum", -10))
        high = bounds.get("maximum", bounds.get("exclusiveMaximum", 10))
        options.append(st.integers(int(low - spill), int(high + spill)))
        if "number" in types:
            options.append(st.floats(low - spill, high + spill))
    if "string" in types:
        options.append(TEXT)
    if "array" in types:
        options.append(st.lists(TEXT, max_size=4))
    if "object" in types:
        options.append(st.dictionaries(st.text(max_size=8), JSON, max_size=4))
    return st.one_of(options) if options else VALUES


@st.composite
def tool_calls(draw: st.DrawFn, params: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """A tool and its arguments: a valid call with some arguments set to nearly right or wrong
    values, then maybe a required one dropped, an unknown one added, odd messages, odd deployment."""
    tool = draw(st.sampled_from(sorted(VALID)))
    args = dict(VALID[tool])
    settable = sorted(set(params[tool]) - {"messages"})  # messages have their own mutation, below
    for name in draw(st.lists(st.sampled_from(settable), max_size=4, unique=True)):
        prop = params[tool][name]
        args[name] = draw(st.one_of(typed(prop, spill=0), typed(prop, spill=0), typed(prop, spill=1), VALUES))
    for action in draw(st.lists(st.sampled_from(["drop", "unknown", "messages", "deployment"]), max_size=2)):
        if action == "drop" and args:
            del args[draw(st.sampled_from(sorted(args)))]
        elif action == "unknown":
            args[draw(st.text(min_size=1, max_size=12))] = draw(VALUES)
        elif action == "messages" and tool in ("chat", "messages"):
            args["messages"] = draw(st.lists(MESSAGE, max_size=4))
        elif action == "deployment":
            args["deployment"] = draw(DEPLOYMENT_NAMES)
    return tool, args


# --- The properties ------------------------------------------------------------------------------


def check_answer(tool: str, args: dict[str, Any], result: CallToolResult, sent: list[RecordedRequest]) -> None:
    text = text_of(result)
    if result.is_error:
        assert text.strip(), "an error without a message"
        assert text.strip() != f"Error executing tool {tool}", "a crash: the SDK's reasonless error"
        assert "Traceback" not in text
    if not sent:
        assert result.is_error, "a call that reached no deployment claims success"
    for request in sent:
        check_forwarded(tool, args, request)


def check_forwarded(tool: str, args: dict[str, Any], request: RecordedRequest) -> None:
    """What reached the deployment is well formed for its protocol and carries the caller's text as is."""
    assert request.deployment_id in DEPLOYMENTS
    assert request.path == ROUTES[tool]
    assert request.auth_via == ("x-api-key" if tool == "messages" else "bearer")
    if tool == "list_models":
        assert request.method == "GET" and not request.body
        return
    assert request.json is not None, f"not JSON: {request.body[:200]!r}"
    jsonschema.validate(request.json, PROTOCOL[request.path])
    if tool in ("chat", "messages"):
        forwarded = request.json["messages"]
        assert len(forwarded) == len(args["messages"])
        for sent, given_message in zip(forwarded, args["messages"], strict=True):
            if isinstance(given_message, dict) and isinstance(given_message.get("content"), str):
                assert sent["content"] == given_message["content"], "the text was altered on the way"
    if tool == "complete":
        assert request.json["prompt"] == args["prompt"]


@pytest.fixture
def two_canned(gateway: Gateway, tmp_path: Path) -> dict[str, str]:
    for name in DEPLOYMENTS:
        gateway.add_canned_deployment(name)
    config = tmp_path / "fuzz.toml"
    config.write_text("".join(f'[deployments.{n}]\nbase_url = "{gateway.base_url_for(n)}"\n' for n in DEPLOYMENTS))
    return {"GGUF_MCP_CONFIG": str(config), "MODELSLAB_API_KEY": ACCOUNT_KEY}


async def test_any_arguments_get_a_clear_answer_and_nothing_malformed_is_forwarded(
    bridge: Bridge, gateway: Gateway, two_canned: dict[str, str]
) -> None:
    async with bridge.connect(two_canned) as client:
        listed = (await client.list_tools()).tools
        # Each tool's advertised arguments, and `deployment` (advertised only with several deployments).
        params = {t.name: {"deployment": {"type": "string"}, **t.input_schema.get("properties", {})} for t in listed}
        assert set(params) == set(VALID), "every tool is fuzzed"

        async def call(tool: str, args: dict[str, Any]) -> tuple[CallToolResult, list[RecordedRequest]]:
            before = len(gateway.requests)
            with anyio.fail_after(CALL_TIMEOUT_S):
                result = await client.call_tool(tool, args)
            return result, gateway.requests[before:]

        def run(tool: str, args: dict[str, Any]) -> None:
            try:
                result, sent = anyio.from_thread.run(call, tool, args)
            except MCPError:
                # Over HTTP, a request body past the limit is refused whole (413): the one protocol error.
                size = len(json.dumps({"params": {"name": tool, "arguments": args}}).encode())
                assert bridge.transport == "http" and size > MAX_REQUEST_BODY - 1024, f"a {size}-byte call failed"
                return
            check_answer(tool, args, result, sent)

        await anyio.to_thread.run_sync(lambda: fuzz(params, run))
        # The same process still serves ordinary calls, and never logged a crash.
        assert not (await client.call_tool("chat", VALID["chat"])).is_error
    stderr = bridge.stderr()
    assert "Traceback" not in stderr
    assert "unexpected exception" not in stderr
    assert ACCOUNT_KEY not in bridge.seen_text()


def fuzz(params: dict[str, dict[str, Any]], run: Callable[[str, dict[str, Any]], None]) -> None:
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(call=tool_calls(params))
    # The classics, every run: empty lists, wrong types, unknown names, odd text, missing fields.
    @example(call=("chat", {"messages": []}))
    @example(call=("chat", {"messages": "Hello"}))
    @example(call=("chat", {"messages": [{"role": "robot", "content": "x"}]}))
    @example(call=("chat", {"messages": USER, "deployment": "nope"}))
    @example(call=("chat", {"messages": USER, "max_tokens": -1, "temperature": 9}))
    @example(call=("messages", {"messages": USER}))
    @example(call=("messages", {"messages": [{"role": "system", "content": "x"}], "max_tokens": 1}))
    @example(call=("messages", {"messages": USER, "max_tokens": "many"}))
    @example(call=("complete", {"prompt": ""}))
    @example(call=("complete", {"prompt": ["a", "b"]}))
    @example(call=("embed", {"input": []}))
    @example(call=("embed", {"input": [""]}))
    @example(call=("embed", {"input": [1, 2]}))
    @example(call=("list_models", {"deployment": "../../etc"}))
    @example(call=("chat", {"messages": [{"role": "user", "content": "\u202e\x00🦙" * 1000}]}))
    @example(call=("chat", {"messages": USER, "tools": [_nest(120)]}))
    def check(call: tuple[str, dict[str, Any]]) -> None:
        run(*call)

    check()


# --- Beyond what the properties cover --------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": "x", "tool_calls": 5},
        {"role": "assistant", "content": None, "tool_calls": [{"function": "f"}]},
        {"role": "tool", "content": "x", "tool_call_id": 5},
        {"role": "user", "content": "x", "name": {}},
    ],
    ids=["tool_calls-not-a-list", "tool_call-function-not-an-object", "tool_call_id-not-a-string", "name-object"],
)
async def test_chat_message_pass_through_keys_are_type_checked(
    gateway: Gateway, two_canned: dict[str, str], tmp_path: Path, message: dict[str, Any]
) -> None:
    async with Bridge("stdio", tmp_path).connect(two_canned) as client:
        result = await client.call_tool("chat", {"messages": [*USER, message], "max_tokens": 2})
    assert result.is_error
    assert gateway.requests == [], "a malformed message was forwarded"


@pytest.mark.xfail(
    strict=True,
    reason="mcp SDK (mcp/server/stdio.py stdin_reader): a JSON-RPC line pydantic cannot parse (nesting "
    "deeper than its ~200-level recursion limit) is passed to the dispatcher as an exception, which only "
    "logs it at debug level: no error response, so the client waits for its read time-out. HTTP answers.",
)
async def test_deeply_nested_arguments_get_an_answer_over_stdio(two_canned: dict[str, str], tmp_path: Path) -> None:
    async with Bridge("stdio", tmp_path).connect(two_canned) as client:
        with anyio.move_on_after(3):
            answered = await client.call_tool(
                "chat", {"messages": USER, "max_tokens": 2, "tools": [_nest(200)]}, read_timeout_seconds=2
            )
            assert answered is not None
            after = await client.call_tool("chat", VALID["chat"])
            assert not after.is_error
            return
    pytest.fail("no answer within 3 s")


def test_json_nested_deeper_than_the_parser_takes_gets_a_parse_error_over_http(
    gateway: Gateway, tmp_path: Path
) -> None:
    """What the README promises beside the stdio drop above: over HTTP, 400 with a JSON-RPC parse error,
    and the session goes on answering."""
    nested = '"bottom"'
    for level in range(5000):
        nested = f'{{"k":{nested}}}' if level % 2 else f"[{nested}]"
    arguments = f'{{"messages":[{{"role":"user","content":"x"}}],"tools":[{nested}]}}'
    call = f'{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"chat","arguments":{arguments}}}}}'
    with http_server(gateway, tmp_path) as server, httpx.Client(timeout=30) as http:
        opened = http.post(server.url, headers=MCP_HEADERS, json=INITIALIZE)
        headers = {
            **MCP_HEADERS,
            "mcp-session-id": opened.headers["mcp-session-id"],
            "mcp-protocol-version": "2025-11-25",
        }
        refused = http.post(server.url, headers=headers, content=call)
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == -32700
        ping = http.post(server.url, headers=headers, json={"jsonrpc": "2.0", "id": 3, "method": "ping"})
        assert ping.status_code == 200 and '"id":3' in ping.text


def test_the_protocol_oracle_rejects_what_it_should() -> None:
    """The oracle above is itself checked, so a lax schema cannot hide forwarded garbage."""
    bad_bodies = {
        "/v1/chat/completions": {"model": "local", "messages": [{"role": "robot", "content": "x"}]},
        "/v1/messages": {"model": "local", "messages": [{"role": "system", "content": "x"}], "max_tokens": 1},
        "/v1/completions": {"model": "local", "prompt": ""},
        "/v1/embeddings": {"model": "local", "input": [""]},
    }
    for route, body in bad_bodies.items():
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, PROTOCOL[route])
    good = {"model": "local", "messages": USER, "max_tokens": 1, "stream": True, "stream_options": {}}
    jsonschema.validate(good, PROTOCOL["/v1/chat/completions"])
