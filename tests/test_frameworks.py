"""The agent-framework snippets work as written: each is read from the documentation (the block
after its `<!-- snippet: NAME -->` marker), its placeholders filled in, and run with the
framework's own Python, in an environment of its own (tests/support/frameworks.py), against
llama.cpp's server. No agent loop runs (that needs a model provider): the snippets use the
frameworks' MCP client objects directly, listing the tools and calling `chat` with progress.

Placeholders: the absolute path becomes the installed `gguf-mcp` (this venv's), the deployment
id the llama.cpp server's URL as `GGUF_BASE_URL`, and port 8000 a free loopback port. The key
is only ever in the environment. Install times are printed (`pytest -rP`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gguf_mcp.config import TOOL_NAMES
from tests.support.bridge import free_port, wait_until_healthy
from tests.support.frameworks import FRAMEWORKS, ensure_framework, installed_versions
from tests.support.llama import LlamaServer

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS_FILE = ROOT / "README.md"
"""Where the snippets live until the lead merges them: then ROOT / "README.md"."""
INSTALLED = Path(sys.executable).parent / "gguf-mcp"
DESKTOP_PATH = "/usr/bin:/bin"
PLACEHOLDER_COMMAND = "/absolute/path/to/.venv/bin/gguf-mcp"
PLACEHOLDER_ENV_ENTRY = '"GGUF_DEPLOYMENT_ID": "your-deployment-id"'
PLACEHOLDER_SHELL_SETTING = "GGUF_DEPLOYMENT_ID=your-deployment-id"
PLACEHOLDER_PORT = "8000"
MAX_TOKENS = 32  # what the snippets ask for
RUN_TIMEOUT_S = 180
START_TIMEOUT_S = 60


def snippet(name: str) -> tuple[str, str]:
    """The fenced block right after `<!-- snippet: NAME -->`: (language, text)."""
    text = SNIPPETS_FILE.read_text()
    marker = f"<!-- snippet: {name} -->\n"
    assert text.count(marker) == 1, f"expected one {marker!r} in {SNIPPETS_FILE}"
    block = re.compile(r"```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL).match(text, text.index(marker) + len(marker))
    assert block is not None, f"no code block right after {marker!r}"
    return block.group(1), block.group(2)


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"expected {old!r} once in the snippet"
    return text.replace(old, new)


def python_snippet(name: str, llama: LlamaServer, mcp_url: str | None = None) -> str:
    language, code = snippet(name)
    assert language == "python"
    if mcp_url is None:  # the snippet starts gguf-mcp itself, over stdio
        code = replace_once(code, PLACEHOLDER_COMMAND, str(INSTALLED))
        code = replace_once(code, PLACEHOLDER_ENV_ENTRY, f'"GGUF_BASE_URL": "{llama.url}"')
    else:
        code = replace_once(code, f"http://127.0.0.1:{PLACEHOLDER_PORT}/mcp", mcp_url)
    assert "your-" not in code and "/absolute/path" not in code, code
    return code


def run_snippet(framework: str, code: str, env: dict[str, str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run `code` with the framework's Python; print the install record's timing."""
    started = time.monotonic()
    python = ensure_framework(framework)
    ready = time.monotonic() - started
    record = json.loads((python.parent.parent / "framework.json").read_text())
    script = workdir / f"{framework}-snippet.py"
    script.write_text(code)
    started = time.monotonic()
    out = subprocess.run(
        [str(python), str(script)],
        env={"PATH": DESKTOP_PATH, "HOME": str(workdir), **env},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    print(
        f"{framework}: environment ready in {ready:.1f} s (built once in {record['install_seconds']} s: "
        f"{', '.join(v for v in installed_versions(python) if v.split('==')[0] in _TOP_LEVEL[framework])}); "
        f"snippet ran in {time.monotonic() - started:.1f} s"
    )
    return out


_TOP_LEVEL = {
    name: {re.split(r"[\[=<>]", r)[0] for r in reqs} | {"mcp", "fastmcp-slim", "langchain-core"}
    for name, reqs in FRAMEWORKS.items()
}


def check_output(out: subprocess.CompletedProcess[str], key: str) -> None:
    """The tools listed, progress seen up to the full answer, the answer printed, no key anywhere."""
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert f"tools: {', '.join(TOOL_NAMES)}" in lines, out.stdout
    progress = [float(m.group(1)) for line in lines if (m := re.fullmatch(r"progress: ([\d.]+) tokens", line))]
    assert progress, f"no progress reached the framework:\n{out.stdout}"
    assert progress == sorted(progress) and progress[-1] == MAX_TOKENS, progress
    answers = [line for line in lines if line.startswith("answer: ")]
    assert len(answers) == 1 and len(answers[0]) > len("answer: "), out.stdout
    assert key not in out.stdout + out.stderr


def test_openai_agents_lists_the_tools_and_calls_chat_with_progress(llama_server: LlamaServer, tmp_path: Path) -> None:
    code = python_snippet("openai-agents", llama_server)
    assert "client_session_timeout_seconds=" in code  # the 5 s default would cut long answers
    out = run_snippet("openai-agents", code, {"MODELSLAB_API_KEY": llama_server.api_key}, tmp_path)
    check_output(out, llama_server.api_key)


def test_pydantic_ai_lists_the_tools_and_calls_chat_with_progress(llama_server: LlamaServer, tmp_path: Path) -> None:
    code = python_snippet("pydantic-ai", llama_server)
    out = run_snippet("pydantic-ai", code, {"MODELSLAB_API_KEY": llama_server.api_key}, tmp_path)
    check_output(out, llama_server.api_key)


@contextmanager
def the_server_snippet(llama: LlamaServer, workdir: Path) -> Iterator[str]:
    """Run the documented `gguf-mcp --transport http` lines in bash, typing the key when asked;
    yield the MCP URL once /healthz answers, then stop the whole process group."""
    language, script = snippet("langchain-server")
    assert language == "bash"
    port = free_port()
    script = replace_once(script, PLACEHOLDER_SHELL_SETTING, f"GGUF_BASE_URL={llama.url}")
    script = replace_once(script, f"--port {PLACEHOLDER_PORT}", f"--port {port}")
    (workdir / ".venv" / "bin").mkdir(parents=True)
    (workdir / ".venv" / "bin" / "gguf-mcp").symlink_to(INSTALLED)  # the checkout's venv, from Install
    log_path = workdir / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            ["/bin/bash", "-c", script],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            env={"PATH": DESKTOP_PATH, "HOME": str(workdir)},
            cwd=workdir,
            text=True,
            start_new_session=True,  # one process group: bash and the server it starts
        )
    assert server.stdin is not None
    server.stdin.write(llama.api_key + "\n")
    server.stdin.close()
    try:
        wait_until_healthy(server, f"http://127.0.0.1:{port}", log_path.read_text)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        assert llama.api_key not in log_path.read_text()


def test_langchain_from_its_own_environment_over_http(llama_server: LlamaServer, tmp_path: Path) -> None:
    with the_server_snippet(llama_server, tmp_path) as url:
        code = python_snippet("langchain", llama_server, mcp_url=url)
        out = run_snippet("langchain", code, {}, tmp_path)  # the client needs no key
    check_output(out, llama_server.api_key)
    python = ensure_framework("langchain")
    mcp_version = next(v for v in installed_versions(python) if v.startswith("mcp=="))
    assert mcp_version.startswith("mcp==1."), mcp_version  # why it needs an environment of its own
