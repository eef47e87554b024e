"""Tool schemas every client accepts, checked with the clients themselves (issue 14, part 2).

- The Inspector CLI's schema portability report (``--strict`` on ``tools/list``) finds nothing.
- llama-index's MCP conversion (``McpToolSpec``) keeps every form of every argument gguf-mcp
  accepts: each sample call below passes its converted tool's argument model unchanged.
- The OpenAI Agents SDK converts every tool to strict mode except where an argument is free-form
  JSON by nature (`FREE_FORM`, with the reason); each argument is also converted on its own.
- Pydantic AI's OpenAI strict mode takes every tool and every argument (no untyped array).
- Strict mode makes every argument required, so a model must send each one: both strict converters'
  schemas take `null` for every optional argument of every tool, and the call made that way, through
  the framework's own MCP client, succeeds against llama.cpp's server (nothing had to be invented).

Every client lists the tools over Streamable HTTP from the same two ``gguf-mcp --transport http``
processes: one deployment, and two (where a `deployment` argument is offered). The frameworks run
in environments of their own (tests/support/frameworks.py; the conversions are in
tests/support/schema_conversions.py), the Inspector is the pinned one (tests/support/node_tools.py).
All start together when the module's first test asks, so the module takes about as long as its
slowest part (llama-index's import, ~5 s of CPU). No upstream is contacted: listing tools needs
none, and the deployments point at closed loopback ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gguf_mcp.config import TOOL_NAMES, load_settings
from gguf_mcp.tools import build_tools
from tests.support.bridge import base_env, running_http_server
from tests.support.frameworks import ensure_framework
from tests.support.llama import LLAMA_KEY, running_llama_server
from tests.support.node_tools import ensure_node_tools

pytestmark = pytest.mark.timeout(600)  # a first run builds the environments (minutes)

ROOT = Path(__file__).resolve().parents[1]
CONVERSIONS = ROOT / "tests" / "support" / "schema_conversions.py"
FRAMEWORK_NAMES = ("llama-index", "openai-agents", "pydantic-ai")
STRICT_CONVERTERS = ("openai-agents", "pydantic-ai")
RUN_TIMEOUT_S = 180.0
CANARY_KEY = "canary-schema-portability-key"
SEVERAL = '[deployments.a]\nbase_url = "http://127.0.0.1:9"\n[deployments.b]\nbase_url = "http://127.0.0.1:8"\n'

FREE_FORM: Mapping[str, Mapping[str, str]] = {
    "chat": {
        "messages": "OpenAI messages pass through: content parts (image_url, input_audio, file) and other keys",
        "tools": "each function's `parameters` is a JSON Schema",
        # Not free-form by nature: {"type":"function","function":{"name":...}} could be typed, for 112 more
        # characters than the budget has, and chat would still not be strict (messages, tools).
        "tool_choice": "left open for the character budget",
        "response_format": "carries a JSON Schema (`json_schema.schema`)",
    },
    "messages": {
        "messages": "Anthropic content blocks (tool_use carries free-form `input`, tool_result nested content)",
        "system": "Anthropic text blocks pass through (cache_control and the like)",
        "tools": "each tool's `input_schema` is a JSON Schema",
        # Not free-form by nature either ({"type":"auto|any|tool|none","name":...}): 85 more characters, and
        # strict mode would then require `name` with "auto".
        "tool_choice": "left open for the character budget",
    },
}
"""The arguments that stay out of strict mode, and why: a strict schema closes every object, so it
would refuse what callers send in these (or, for tool_choice, cost what the budget lacks)."""

USER = [{"role": "user", "content": "Hi"}]
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
FORMS: Mapping[str, list[dict[str, Any]]] = {
    "list_models": [{}],
    "chat": [
        {"messages": USER, "stop": "\n", "tool_choice": "auto"},
        {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "stop": ["\n", "END"],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": WEATHER}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": WEATHER}},
            "max_tokens": 16,
            "temperature": 0.5,
            "top_p": 0.9,
            "seed": -1,
            "deadline": 2.5,
        },
    ],
    "messages": [
        {"messages": USER, "max_tokens": 16, "system": "Be brief."},
        {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "max_tokens": 16,
            "system": [{"type": "text", "text": "Be brief."}],
            "stop_sequences": ["END"],
            "tools": [{"name": "weather", "input_schema": WEATHER}],
            "tool_choice": {"type": "tool", "name": "weather"},
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 40,
            "deadline": 2.5,
        },
    ],
    "complete": [
        {"prompt": "Once", "stop": "\n"},
        {"prompt": "Once", "stop": ["\n", "END"], "max_tokens": 16, "temperature": 0.5, "top_p": 0.9, "seed": 7},
    ],
    "embed": [{"input": "hello"}, {"input": ["hello", "world"]}],
}
"""Every form of every argument, as callers send them today."""

REQUIRED: Mapping[str, dict[str, Any]] = {
    "list_models": {},
    "chat": {"messages": USER},
    "messages": {"messages": USER, "max_tokens": 2},
    "complete": {"prompt": "Once"},
    "embed": {"input": "hello"},
}
"""Each tool's required arguments; a strict model sends `null` for every other one."""


def forms(with_deployment: bool) -> dict[str, list[dict[str, Any]]]:
    if not with_deployment:
        return {tool: list(samples) for tool, samples in FORMS.items()}
    return {tool: [*samples, {**samples[0], "deployment": "b"}] for tool, samples in FORMS.items()}


def server_configs(workdir: Path) -> dict[str, dict[str, str]]:
    """gguf-mcp's settings (environment) for each server label: one deployment, or two."""
    config = workdir / "several.toml"
    config.write_text(SEVERAL)
    base = base_env() | {"MODELSLAB_API_KEY": CANARY_KEY}
    return {"one": {**base, "GGUF_BASE_URL": "http://127.0.0.1:9"}, "several": {**base, "GGUF_MCP_CONFIG": str(config)}}


def run_framework(name: str, urls: Mapping[str, str]) -> dict[str, Any]:
    servers = {label: {"url": url, "samples": forms(label == "several")} for label, url in urls.items()}
    return run_conversions(name, {"servers": servers})


def run_conversions(name: str, request: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    python = ensure_framework(name)
    ready = time.monotonic()
    out = subprocess.run(
        [str(python), str(CONVERSIONS), name],
        input=json.dumps(request),
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OPENAI_AGENTS_DONT_LOG_TOOL_DATA": "0"},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert out.returncode == 0, f"{name} conversion failed:\n{out.stderr[-4000:]}"
    print(f"{name}: environment ready in {ready - started:.1f} s, conversions in {time.monotonic() - ready:.1f} s")
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def run_inspector(urls: Mapping[str, str]) -> dict[str, Any]:
    """``--strict`` on ``tools/list`` for each server: exit code, stdout, stderr."""
    tools = ensure_node_tools()
    runs = {}
    for label, url in urls.items():
        argv = [url, "--stored-auth-only", "--method", "tools/list", "--strict", "--format", "json"]
        run = tools.run_inspector_cli(argv)
        runs[label] = {"returncode": run.returncode, "stdout": run.stdout, "stderr": run.stderr}
    return runs


def llama_config(workdir: Path, url: str) -> dict[str, str]:
    """Two deployments on llama.cpp's server, so that `deployment` is an optional argument too."""
    config = workdir / "llama.toml"
    config.write_text(f'[deployments.a]\nbase_url = "{url}"\n[deployments.b]\nbase_url = "{url}"\n')
    return base_env() | {"GGUF_MCP_CONFIG": str(config), "MODELSLAB_API_KEY": LLAMA_KEY}


@pytest.fixture(scope="module")
def checks(tiny_model_path: Path) -> Iterator[Mapping[str, Future[dict[str, Any]]]]:
    """Every client's run, started together against the same servers; a test waits for its own.

    The strict converters' calls go to llama.cpp's server, started with a default of 4 tokens: a
    call that leaves max_tokens unset would otherwise generate a whole context (about 20 s)."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="schema-portability-")))
        urls = {
            label: stack.enter_context(running_http_server(env, tmp / f"{label}.log"))
            for label, env in server_configs(tmp).items()
        }
        llama = stack.enter_context(running_llama_server(tiny_model_path, LLAMA_KEY, n_predict=4))
        on_llama = stack.enter_context(running_http_server(llama_config(tmp, llama.url), tmp / "llama.log"))
        null_calls = {"null_calls": {"url": on_llama, "required": REQUIRED}}
        pool = stack.enter_context(ThreadPoolExecutor(len(FRAMEWORK_NAMES) + 1 + len(STRICT_CONVERTERS)))
        futures = {name: pool.submit(run_framework, name, urls) for name in FRAMEWORK_NAMES}
        futures["inspector"] = pool.submit(run_inspector, urls)
        for name in STRICT_CONVERTERS:
            futures[f"{name} null calls"] = pool.submit(run_conversions, name, null_calls)
        yield futures
        for future in futures.values():
            future.exception()  # the servers stop once nobody uses them
        for label in [*urls, "llama"]:
            assert CANARY_KEY not in (tmp / f"{label}.log").read_text()
            assert LLAMA_KEY not in (tmp / f"{label}.log").read_text()


def test_the_samples_are_what_gguf_mcp_accepts(tmp_path: Path) -> None:
    """The forms the clients must keep are ones the server validates today (and keeps as sent)."""
    for label, env in server_configs(tmp_path).items():
        tools = {t.name: t for t in build_tools(load_settings({}, env))}
        for name, samples in forms(label == "several").items():
            for sample in samples:
                validated = tools[name].fn_metadata.arg_model.model_validate(sample)
                assert validated.model_dump(exclude_unset=True, mode="json") == sample, (name, sample)


def test_the_inspector_reports_no_portability_problem(checks: Mapping[str, Future[dict[str, Any]]]) -> None:
    for label, run in checks["inspector"].result().items():
        what = f"inspector --strict tools/list ({label})\n{run['stderr']}"
        assert run["returncode"] == 0, what
        listed = json.loads(run["stdout"])
        assert [t["name"] for t in listed["result"]["tools"]] == list(TOOL_NAMES), what
        assert "schemaFindings" not in listed, what
        # With --strict each finding is a `Warning: tool "name"` (or Error) block on stderr, then a count.
        assert "Warning: tool" not in run["stderr"] and "Error: tool" not in run["stderr"], what
        assert " across " not in run["stderr"], what


def test_llama_index_keeps_every_accepted_form(checks: Mapping[str, Future[dict[str, Any]]]) -> None:
    for label, report in checks["llama-index"].result().items():
        assert list(report) == list(TOOL_NAMES)
        for name, tool in report.items():
            lost = [s for s in tool["samples"] if not s["kept"]]
            assert not lost, f"llama-index ({label}) {name}: {json.dumps(lost)}\nfields: {tool['fields']}"
            assert len(tool["samples"]) == len(forms(label == "several")[name])


def test_openai_agents_converts_every_tool_to_strict_unless_free_form(
    checks: Mapping[str, Future[dict[str, Any]]],
) -> None:
    for label, report in checks["openai-agents"].result().items():
        assert list(report) == list(TOOL_NAMES)
        for name, tool in report.items():
            loose = {arg for arg, result in tool["arguments"].items() if not result["strict"]}
            assert loose == set(FREE_FORM.get(name, {})), f"openai-agents ({label}) {name}: {tool}"
            assert tool["strict"] == (not loose), f"openai-agents ({label}) {name}: {tool['error']}"


def test_pydantic_ai_openai_strict_mode_takes_every_tool(checks: Mapping[str, Future[dict[str, Any]]]) -> None:
    for label, report in checks["pydantic-ai"].result().items():
        assert list(report) == list(TOOL_NAMES)
        for name, tool in report.items():
            refused = {arg: r["error"] for arg, r in tool["arguments"].items() if not r["strict"]}
            assert tool["strict"] and not refused, f"pydantic-ai ({label}) {name}: {tool['error']} {refused}"


@pytest.mark.parametrize("converter", STRICT_CONVERTERS)
def test_a_strict_model_can_leave_every_optional_argument_unset_with_null(
    converter: str, checks: Mapping[str, Future[dict[str, Any]]], tmp_path: Path
) -> None:
    report = checks[f"{converter} null calls"].result()
    assert list(report) == list(TOOL_NAMES)
    settings = load_settings({}, llama_config(tmp_path, "http://127.0.0.1:9"))
    refused: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    for tool in build_tools(settings):
        call = report[tool.name]
        optional = set(tool.parameters["properties"]) - set(tool.parameters.get("required", ()))
        assert {name for name, value in call["arguments"].items() if value is None} == optional, call
        # (A strict schema closes every object, so it refuses the free-form required ones: FREE_FORM.)
        if set(call["refused"]) & optional:
            refused[tool.name] = sorted(set(call["refused"]) & optional)
        if call["error"] is not None:
            failed[tool.name] = call["error"]
    assert not refused, f"{converter}: the strict schemas refuse null for {refused}"
    assert not failed, f"{converter}: calls with every optional argument null failed: {failed}"
    # The tools where it matters most: OpenAI Agents converts them whole, so every argument is required.
    if converter == "openai-agents":
        whole = {name for name, call in report.items() if call["whole_tool_strict"]}
        assert whole == {"list_models", "complete", "embed"}
