"""The official MCP tools, run against our server: the conformance suite and the Inspector CLI.

Both come from npm at pinned versions (see `tests.support.node_tools`; the first run installs
them, about 20 s, later runs reuse the cache). The upstream is the real llama.cpp server from the
`llama_server` fixture, so ``chat`` calls go all the way to a model.

- Conformance 0.1.16 only speaks Streamable HTTP, and most of its scenarios need the
  "everything server" fixtures; we run the scenarios that apply to any server.
  ``tools-call-simple-text`` and ``tools-call-error`` are left out on purpose: against the
  Python SDK they pass without their fixture tools (the SDK's unknown-tool result satisfies
  them), so they would test nothing of ours.
- The Inspector CLI drives ``tools/list`` and ``tools/call chat`` over stdio (the Inspector
  starts ``python -m gguf_mcp`` itself) and over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.llama import LlamaServer
from tests.support.node_tools import NodeTools
from tests.support.proc import stop

# Fixtures `llama_server` and `node_tools` come from tests/conftest.py's pytest_plugins.

# One-time cold install of the Node tools (~20 s) happens inside the first test's setup.
pytestmark = pytest.mark.timeout(600)

REPO_ROOT = Path(__file__).resolve().parents[1]
GENERIC_SCENARIOS = (
    "server-initialize",
    "ping",
    "tools-list",
    "resources-list",
    "prompts-list",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
)
EXPECTED_TOOLS = {"list_models", "chat", "messages"}
CHAT_ARGS = {
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 8,
}
STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class HttpServer:
    """Our server running as ``python -m gguf_mcp --transport http`` on loopback."""

    mcp_url: str
    log: Path


def server_env(llama: LlamaServer) -> dict[str, str]:
    """The settings our server gets in every test, free of anything set in the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GGUF_", "MODELSLAB_"))}
    env["GGUF_BASE_URL"] = llama.url
    env["MODELSLAB_API_KEY"] = llama.api_key
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(log: Path, limit: int = 4000) -> str:
    text = log.read_text(errors="replace") if log.exists() else "<no log>"
    return text if len(text) <= limit else "..." + text[-limit:]


def _healthz_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 (our own http:// URL)
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


@contextlib.contextmanager
def running_http_server(llama: LlamaServer, log: Path) -> Iterator[HttpServer]:
    """Start our HTTP server, wait for ``GET /healthz`` to answer 200, stop it with SIGTERM."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gguf_mcp",
        "--transport",
        "http",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            argv,
            env=server_env(llama),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        health = f"http://127.0.0.1:{port}/healthz"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last: int | None = None
        while (last := _healthz_status(health)) != 200:
            if proc.poll() is not None:
                pytest.fail(
                    f"{' '.join(argv)} exited with {proc.returncode} before {health} "
                    f"answered 200; log:\n{_log_tail(log)}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{health} did not answer 200 within {STARTUP_TIMEOUT_S:.0f}s "
                    f"(last status {last}); log:\n{_log_tail(log)}"
                )
            time.sleep(0.1)
        yield HttpServer(mcp_url=f"http://127.0.0.1:{port}/mcp", log=log)
    finally:
        if not stop(proc, SHUTDOWN_TIMEOUT_S):
            pytest.fail(f"our HTTP server ignored SIGTERM for {SHUTDOWN_TIMEOUT_S:.0f}s; log:\n{_log_tail(log)}")


@pytest.fixture(scope="module")
def http_server(llama_server: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    log = tmp_path_factory.mktemp("gguf-mcp-http") / "server.log"
    with running_http_server(llama_server, log) as server:
        yield server


@dataclass(frozen=True)
class InspectorTarget:
    """Where the Inspector finds our server: arguments before and after the method options."""

    name: str
    leading: tuple[str, ...]
    trailing: tuple[str, ...]

    def argv(self, *method_args: str) -> list[str]:
        return [*self.leading, *method_args, *self.trailing]


def stdio_target(llama: LlamaServer, workdir: Path) -> InspectorTarget:
    """The Inspector spawns ``python -m gguf_mcp`` itself, from an ``mcpServers`` config file.

    A config file, not ``-e KEY=VALUE``: the key must never be on a command line, where process
    listings show it. A stdio child only inherits HOME/LOGNAME/PATH/SHELL/TERM/USER from the
    Inspector, so the file's ``env`` carries our settings, as an MCP client's config would.
    """
    env = server_env(llama)
    server = {
        "command": sys.executable,
        "args": ["-m", "gguf_mcp"],
        "env": {name: env[name] for name in ("GGUF_BASE_URL", "MODELSLAB_API_KEY", "PYTHONPATH")},
        "cwd": str(REPO_ROOT),
    }
    config = workdir / "inspector-servers.json"
    config.write_text(json.dumps({"mcpServers": {"gguf": server}}))
    return InspectorTarget("stdio", ("--config", str(config), "--server", "gguf"), ())


def http_target(server: HttpServer) -> InspectorTarget:
    """The URL first (transport auto-detected from ``/mcp``); never start interactive OAuth."""
    return InspectorTarget("http", (server.mcp_url, "--stored-auth-only"), ())


def inspector_result(run_json: Any, what: str) -> Mapping[str, Any]:
    shape = f"{what}: expected {{'result': {{...}}}} on stdout, got {json.dumps(run_json)[:2000]}"
    assert isinstance(run_json, dict), shape
    result: Any = run_json.get("result")
    assert isinstance(result, dict), shape
    return result


def check_tools_list(node_tools: NodeTools, target: InspectorTarget) -> None:
    what = f"inspector {target.name} tools/list"
    run = node_tools.run_inspector_cli(target.argv("--method", "tools/list", "--format", "json"), cwd=REPO_ROOT)
    assert run.returncode == 0, f"{what} failed: {run.describe()}"
    result = inspector_result(run.json(), what)
    names = {str(tool.get("name")) for tool in result.get("tools", [])}
    assert names >= EXPECTED_TOOLS, f"{what} lacks {sorted(EXPECTED_TOOLS - names)}; got {sorted(names)}"


def check_chat(node_tools: NodeTools, target: InspectorTarget) -> None:
    what = f"inspector {target.name} tools/call chat"
    run = node_tools.run_inspector_cli(
        target.argv(
            "--method",
            "tools/call",
            "--tool-name",
            "chat",
            "--tool-args-json",
            json.dumps(CHAT_ARGS),
            "--format",
            "json",
        ),
        cwd=REPO_ROOT,
    )
    assert run.returncode == 0, f"{what} failed: {run.describe()}"
    result = inspector_result(run.json(), what)
    assert result.get("isError") is not True, f"{what} returned an error: {result}"
    structured = result.get("structuredContent")
    assert isinstance(structured, dict), f"{what}: result has no structuredContent object: {result}"
    assert isinstance(structured.get("text"), str), f"{what}: structuredContent has no string 'text': {structured}"
    finish = structured.get("finish_reason")
    assert isinstance(finish, str), f"{what}: structuredContent has no string 'finish_reason': {structured}"
    assert finish, f"{what}: structuredContent has an empty 'finish_reason': {structured}"


@pytest.mark.parametrize("scenario", GENERIC_SCENARIOS)
def test_conformance_scenario(node_tools: NodeTools, http_server: HttpServer, scenario: str, tmp_path: Path) -> None:
    run = node_tools.run_conformance_server(http_server.mcp_url, scenario, tmp_path / "conformance")
    if not run.ok:
        pytest.fail(run.describe())


def test_inspector_stdio_tools_list(node_tools: NodeTools, llama_server: LlamaServer, tmp_path: Path) -> None:
    check_tools_list(node_tools, stdio_target(llama_server, tmp_path))


def test_inspector_stdio_chat(node_tools: NodeTools, llama_server: LlamaServer, tmp_path: Path) -> None:
    check_chat(node_tools, stdio_target(llama_server, tmp_path))


def test_inspector_http_tools_list(node_tools: NodeTools, http_server: HttpServer) -> None:
    check_tools_list(node_tools, http_target(http_server))


def test_inspector_http_chat(node_tools: NodeTools, http_server: HttpServer) -> None:
    check_chat(node_tools, http_target(http_server))
