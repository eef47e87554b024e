"""The README's client snippets work as pasted: each is parsed from README.md, its placeholders
filled in, and gguf-mcp started from exactly that command and environment by the official MCP
client over stdio, with the PATH a desktop app gives (not the shell's), as the snippet's
absolute-path advice assumes.

Placeholders: the absolute path becomes the installed `gguf-mcp`, the key the gateway's account
key, and `GGUF_DEPLOYMENT_ID` the gateway's URL of that deployment as `GGUF_BASE_URL` (an id
always means modelslab.com; tests/test_config.py checks that mapping).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.support.gateway import ACCOUNT_KEY, Gateway
from tests.support.llama import running_llama_server
from tests.support.readme import README, code_after

ROOT = Path(__file__).resolve().parents[1]
INSTALLED = Path(sys.executable).parent / "gguf-mcp"
DESKTOP_PATH = "/usr/bin:/bin"  # what a desktop app gives the servers it spawns, not the user's shell PATH
PLACEHOLDER_COMMAND = "/absolute/path/to/.venv/bin/gguf-mcp"
PLACEHOLDER_KEY = "your-modelslab-api-key"
PLACEHOLDER_ID = "your-deployment-id"
USER = [{"role": "user", "content": "Hello there"}]
THIS_CHECKOUT = {"PYTHONPATH": str(ROOT)}
"""The installed gguf-mcp runs this checkout's code (a worktree's too, not the one the venv was made from)."""


@dataclass(frozen=True)
class ServerEntry:
    """One client's entry for the server: what it runs, with which arguments and variables."""

    command: str
    args: list[str]
    env: dict[str, str]


def snippet(title: str) -> tuple[str, str]:
    """A client's block: the first after its bold title."""
    return code_after(f"**{title}**")


def mcp_servers_entry(title: str) -> ServerEntry:
    """Claude Desktop and Cursor: {"mcpServers": {"gguf": {"command", "args"?, "env"}}}."""
    language, text = snippet(title)
    assert language == "json"
    entry = json.loads(text)["mcpServers"]["gguf"]
    assert set(entry) <= {"command", "args", "env"}
    return ServerEntry(entry["command"], entry.get("args", []), entry["env"])


def vscode_entry(typed_key: str) -> ServerEntry:
    """VS Code: {"inputs": [...], "servers": {"gguf": {"type": "stdio", ...}}}, with each
    `${input:ID}` replaced by what the user types when VS Code prompts for input ID."""
    language, text = snippet("VS Code")
    assert language == "json"
    config = json.loads(text)
    entry = config["servers"]["gguf"]
    assert entry["type"] == "stdio"
    inputs = {i["id"]: i for i in config["inputs"]}

    def resolve(value: str) -> str:
        def typed(match: re.Match[str]) -> str:
            prompt = inputs[match.group(1)]
            assert prompt["type"] == "promptString"
            assert prompt["password"] is True  # the key is typed into a masked field and stored securely
            return typed_key

        return re.sub(r"\$\{input:([^}]+)\}", typed, value)

    return ServerEntry(entry["command"], entry.get("args", []), {k: resolve(v) for k, v in entry["env"].items()})


def claude_code_entry(home: Path) -> ServerEntry:
    """`claude mcp add NAME [--env K=V]... [--scope S] [--transport stdio] -- COMMAND [ARGS]...`,
    after the lines before it (which put the typed key in a file) ran as the user's shell would."""
    language, text = snippet("Claude Code")
    assert language == "bash"
    *setup, line = text.strip().splitlines()
    assert line.startswith("claude mcp add ") and "MODELSLAB_API_KEY" not in line  # the key stays off it
    typed = subprocess.run(
        ["/bin/bash", "-c", "\n".join(setup)],
        input=ACCOUNT_KEY + "\n",
        env={"PATH": DESKTOP_PATH, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert typed.returncode == 0, typed.stderr
    assert ACCOUNT_KEY not in typed.stdout + typed.stderr  # not echoed
    # The shell expands `~/` in the user's home, so Claude Code stores the absolute path.
    words = [str(home) + word[1:] if word.startswith("~/") else word for word in shlex.split(line)]
    assert words[:3] == ["claude", "mcp", "add"]
    separator = words.index("--")
    options, (command, *args) = words[3:separator], words[separator + 1 :]
    assert options[0] == "gguf", "the name must come first: --env takes several values and would take it"
    env: dict[str, str] = {}
    rest = iter(options[1:])
    for word in rest:
        if word in ("--env", "-e"):
            name, _, value = next(rest).partition("=")
            env[name] = value
        elif word in ("--scope", "-s", "--transport", "-t"):
            assert word not in ("--transport", "-t") or next(rest) == "stdio"
        else:
            raise AssertionError(f"unexpected word {word!r} in the claude mcp add line")
    return ServerEntry(command, args, env)


def filled_in(entry: ServerEntry, gw: Gateway) -> ServerEntry:
    """The snippet with the user's values in place of the placeholders; nothing else changes."""
    assert entry.command == PLACEHOLDER_COMMAND
    env = dict(entry.env)
    assert env.pop("GGUF_DEPLOYMENT_ID") == PLACEHOLDER_ID
    env["GGUF_BASE_URL"] = gw.base_url_for("dep-main")  # the deployment's URL, emulated
    if env.get("MODELSLAB_API_KEY") == PLACEHOLDER_KEY:
        env["MODELSLAB_API_KEY"] = ACCOUNT_KEY
    filled = ServerEntry(str(INSTALLED), entry.args, env)
    leftover = json.dumps([filled.command, filled.args, filled.env])
    assert "your-" not in leftover and "/absolute/path" not in leftover, f"unhandled placeholder in {leftover}"
    return filled


ENTRIES: dict[str, Callable[[Path], ServerEntry]] = {
    "claude-desktop": lambda _: mcp_servers_entry("Claude Desktop"),
    "claude-code": claude_code_entry,
    "cursor": lambda _: mcp_servers_entry("Cursor"),
    "vscode": lambda _: vscode_entry(typed_key=ACCOUNT_KEY),
}


@pytest.mark.parametrize("client", list(ENTRIES))
async def test_client_snippet_starts_a_working_server(client: str, gw: Gateway, tmp_path: Path) -> None:
    entry = filled_in(ENTRIES[client](tmp_path), gw)
    env = {"PATH": DESKTOP_PATH, **entry.env, **THIS_CHECKOUT}  # the SDK adds HOME, USER, SHELL... as desktop apps do
    params = StdioServerParameters(command=entry.command, args=entry.args, env=env, cwd=str(tmp_path))
    errlog = tmp_path / "server.stderr"
    with errlog.open("w") as err:
        async with Client(stdio_client(params, errlog=err), read_timeout_seconds=120) as client_session:
            tools = {t.name for t in (await client_session.list_tools()).tools}
            result = await client_session.call_tool("chat", {"messages": USER, "max_tokens": 2})
    assert {"list_models", "chat", "messages"} <= tools
    assert not result.is_error, result
    assert result.structured_content is not None
    assert result.structured_content["usage"]["completion_tokens"] == 2
    (request,) = gw.requests_for("dep-main")
    assert request.auth_via == "bearer"  # the key from the snippet's env block reached the deployment
    assert ACCOUNT_KEY not in errlog.read_text() + json.dumps(result.model_dump(mode="json"))


def test_the_desktop_path_does_not_find_a_bare_gguf_mcp() -> None:
    """Why the snippets need the absolute path: the environment above is a real desktop one."""
    assert INSTALLED.is_file()
    assert shutil.which("gguf-mcp", path=DESKTOP_PATH) is None


def test_the_snippets_name_only_settings_gguf_mcp_knows(tmp_path: Path) -> None:
    from gguf_mcp.config import OPTIONS

    known = {o.env for o in OPTIONS}
    for name, make in ENTRIES.items():
        assert set(make(tmp_path).env) <= known, name


def run_as_written(
    script: str, home: Path, typed: str = "", *, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """A README bash snippet as a user runs it, in `home` (which gets the checkout's venv, as after
    Install), from a desktop PATH, with `typed` on its standard input."""
    (home / ".venv" / "bin").mkdir(parents=True)
    (home / ".venv" / "bin" / "gguf-mcp").symlink_to(INSTALLED)
    return subprocess.run(
        ["/bin/bash", "-ec", script],
        input=typed,
        env={"PATH": DESKTOP_PATH, "HOME": str(home), **THIS_CHECKOUT},
        cwd=home,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_doctor_snippet_checks_the_deployment(gw: Gateway, tmp_path: Path) -> None:
    """README, Check the setup: typed key (not echoed, not in history), then doctor from the venv."""
    language, text = code_after("\n## Check the setup\n")
    assert language == "bash"
    assert PLACEHOLDER_ID in text
    script = text.replace(f"GGUF_DEPLOYMENT_ID={PLACEHOLDER_ID}", f"GGUF_BASE_URL={gw.base_url_for('dep-main')}")
    out = run_as_written(script, tmp_path, ACCOUNT_KEY + "\n")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == "All 8 checks passed: gguf-mcp is ready for your MCP client."
    assert ACCOUNT_KEY not in out.stdout + out.stderr
    routes = ["/v1/models", "/v1/chat/completions", "/v1/messages", "/v1/completions", "/v1/embeddings"]
    assert [r.path for r in gw.requests_for("dep-main")] == routes


def test_the_first_answer_snippet_streams_an_answer_after_doctor(gw: Gateway, tmp_path: Path) -> None:
    """README, A first answer: in the terminal of Check the setup (the key typed there), `ask` answers."""
    _, setup = code_after("\n## Check the setup\n")
    language, text = code_after("\n## A first answer from the terminal\n")
    assert language == "bash"
    url = gw.base_url_for("dep-main")
    script = (setup + text).replace(f"GGUF_DEPLOYMENT_ID={PLACEHOLDER_ID}", f"GGUF_BASE_URL={url}")
    out = run_as_written(script, tmp_path, ACCOUNT_KEY + "\n")
    assert out.returncode == 0, out.stdout + out.stderr
    _, ready, answer = out.stdout.partition("gguf-mcp is ready for your MCP client.\n")
    assert ready and len(answer) > 1 and answer.endswith("\n"), out.stdout  # doctor's verdict, then the answer
    assert ACCOUNT_KEY not in out.stdout + out.stderr
    asked = gw.requests_for("dep-main")[-1]
    assert (asked.path, asked.auth_via) == ("/v1/chat/completions", "bearer")
    assert asked.json is not None and asked.json["stream"] is True
    assert asked.json["messages"] == [{"role": "user", "content": "Say hello in five words."}]
    assert asked.json["max_tokens"] == 64


def test_the_quick_start_runs_as_written_against_a_plain_llama_server(tiny_model_path: Path, tmp_path: Path) -> None:
    """README, Try it without a GGUF Cloud account: a keyless llama-server started the quick start's way
    (no --embeddings), then doctor and ask exactly as written: ready, and an answer."""
    _, text = code_after("point gguf-mcp at it; no key is needed")
    with running_llama_server(tiny_model_path, "", embeddings=False, log_path=tmp_path / "llama.log") as llama:
        out = run_as_written(text.replace("http://127.0.0.1:8080", llama.url), tmp_path, timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr
    checks, ready, answer = out.stdout.partition("gguf-mcp is ready for your MCP client.\n")
    assert "\n--   default: embeddings not served: " in checks
    assert ready and len(answer) > 1 and answer.endswith("\n"), out.stdout  # doctor's verdict, then the answer


def test_the_wheel_commands_name_this_version() -> None:
    from gguf_mcp import __version__

    _, text = code_after("Without a venv of your own")
    wheels = set(re.findall(r"dist/(gguf_mcp-[^ ]+\.whl)", text))
    assert wheels == {f"gguf_mcp-{__version__}-py3-none-any.whl"}
    assert "pip wheel . --no-deps -w dist" in text


def test_every_command_in_the_readme_runs_after_the_install_without_activating_the_venv() -> None:
    """The install puts gguf-mcp and uvicorn in .venv/bin, not on PATH: no block may call them bare."""
    blocks = re.findall(r"^```(?:bash|sh)\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)
    assert blocks
    for block in blocks:
        for line in block.splitlines():
            if line.startswith(("uvx ", "pipx ")):
                continue  # the command's name as an argument of another installer, not a call
            for word in ("gguf-mcp", "uvicorn"):
                bare = re.search(rf"(^|[\s;&|(=]){word}(\s|$)", line)
                assert bare is None, f"bare {word!r} (not on PATH after the install) in: {line}"


def test_the_run_snippet_starts_the_server_as_written(gw: Gateway, tmp_path: Path) -> None:
    """README, Run: the key typed at a prompt, then the venv's gguf-mcp serving stdio until stdin ends."""
    _, text = code_after("\n## Run\n")
    script = text.replace(f"GGUF_DEPLOYMENT_ID={PLACEHOLDER_ID}", f"GGUF_BASE_URL={gw.base_url_for('dep-main')}")
    request = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
               "capabilities": {}, "clientInfo": {"name": "readme", "version": "0"}}}  # fmt: skip
    out = run_as_written(script, tmp_path, ACCOUNT_KEY + "\n" + json.dumps(request) + "\n")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["result"]["serverInfo"]["name"] == "gguf-mcp"
    assert ACCOUNT_KEY not in out.stdout + out.stderr
