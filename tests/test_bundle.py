"""The Claude Desktop bundle (gguf-mcp.mcpb): built by scripts/build-bundle.py with Anthropic's
own `mcpb` CLI (pinned, tests/support/node_tools.py), unpacked by `mcpb unpack` into an empty
folder, and started the way Claude Desktop starts it.

How the host starts a bundle is not re-implemented here: `getMcpConfigForManifest`, from the
same npm package (the code Claude Desktop uses to load bundles, per its README), turns the
manifest plus the user's settings into the command, arguments and environment. The server type
is `uv`, so the command is the host's `uv`, which installs the dependencies from the bundled
pyproject.toml on the first start; here that is the pinned uv of the test extra, with its cache
under ~/.cache/gguf-mcp. Timings are printed (`pytest -rP`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

from gguf_mcp import __version__
from gguf_mcp.config import OPTIONS, TOOL_NAMES
from tests.support.llama import LLAMA_KEY, LlamaServer
from tests.support.node_tools import NodeTools, cache_root

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "manifest.json"
BUILD_SCRIPT = ROOT / "scripts" / "build-bundle.py"
UV = Path(sys.executable).parent / "uv"
DESKTOP_PATH = "/usr/bin:/bin"  # what a desktop app gives the servers it spawns
USER = [{"role": "user", "content": "Hello there"}]
# How this machine's HTTPS reaches the package index (a CA bundle of its own); not the bundle's business.
TLS = {k: os.environ[k] for k in ("SSL_CERT_FILE", "SSL_CERT_DIR") if k in os.environ}
START_TIMEOUT_S = 300  # the first start installs the dependencies
BUNDLED_TOP_LEVEL = {"manifest.json", "pyproject.toml", "README.md"}

# Claude Desktop's own code (the mcpb package's `getMcpConfigForManifest`), fed on stdin.
HOST_CONFIG_JS = """
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const input = JSON.parse(readFileSync(0, "utf8"));
const { getMcpConfigForManifest } = await import(pathToFileURL(input.library).href);
const config = await getMcpConfigForManifest({
  manifest: input.manifest,
  extensionPath: input.extensionPath,
  systemDirs: { HOME: input.home },
  userConfig: input.userConfig,
  pathSeparator: "/",
});
process.stdout.write(JSON.stringify(config ?? null));
"""


def manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(MANIFEST.read_text())
    return data


def host_config(node_tools: NodeTools, extension: Path, user_config: dict[str, Any], home: Path) -> dict[str, Any]:
    """What Claude Desktop runs for this bundle installed at `extension` with these settings."""
    request = {
        "library": str(node_tools.mcpb_library),
        "manifest": json.loads((extension / "manifest.json").read_text()),
        "extensionPath": str(extension),
        "userConfig": user_config,
        "home": str(home),
    }
    out = subprocess.run(
        [str(node_tools.node), "--input-type=module", "-e", HOST_CONFIG_JS],
        input=json.dumps(request),
        env=node_tools.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    config: dict[str, Any] = json.loads(out.stdout)
    return config


@pytest.fixture(scope="module")
def bundle(node_tools: NodeTools, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "gguf-mcp.mcpb"
    started = time.monotonic()
    built = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert "Manifest schema validation passes!" in built.stdout
    print(f"bundle built in {time.monotonic() - started:.1f} s ({out.stat().st_size} bytes)")
    return out


@pytest.fixture
def unpacked(bundle: Path, node_tools: NodeTools, tmp_path: Path) -> Path:
    """`mcpb unpack` into an empty folder, as the host installs it."""
    folder = tmp_path / "Claude Extensions" / "gguf-mcp"  # a space, as in the real install folder
    folder.mkdir(parents=True)
    out = subprocess.run(
        node_tools.mcpb_argv("unpack", str(bundle), str(folder)),
        env=node_tools.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return folder


def test_the_pinned_mcpb_accepts_the_manifest_and_rejects_a_broken_one(node_tools: NodeTools, tmp_path: Path) -> None:
    ok = subprocess.run(
        node_tools.mcpb_argv("validate", str(MANIFEST)), env=node_tools.env(), capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = manifest()
    broken["server"]["type"] = "conda"
    (tmp_path / "manifest.json").write_text(json.dumps(broken))
    refused = subprocess.run(
        node_tools.mcpb_argv("validate", str(tmp_path / "manifest.json")),
        env=node_tools.env(),
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0  # the validator really reads the file


def test_the_manifest_describes_this_server() -> None:
    data = manifest()
    assert data["manifest_version"] == "0.4"  # the first version with the uv server type
    assert data["version"] == __version__
    assert data["server"]["type"] == "uv"
    assert (ROOT / data["server"]["entry_point"]).is_file()
    assert [t["name"] for t in data["tools"]] == list(TOOL_NAMES)
    config = data["server"]["mcp_config"]
    assert config["command"] == "uv"
    assert config["args"][0] == "run" and "${__dirname}" in config["args"]
    known = {o.env for o in OPTIONS}
    assert set(config["env"]) <= known


def test_the_api_key_is_a_sensitive_setting_passed_in_the_environment_only() -> None:
    data = manifest()
    config = data["server"]["mcp_config"]
    settings = data["user_config"]
    assert config["env"]["MODELSLAB_API_KEY"] == "${user_config.api_key}"
    assert settings["api_key"]["sensitive"] is True  # masked, and kept in the OS keychain
    assert "user_config" not in json.dumps(config["args"])  # nothing the user types lands in argv (ps shows it)
    # Claude Desktop substitutes a setting the user left empty with its default, and a setting
    # without a default not at all: the literal "${user_config.x}" would then reach the server.
    used = set(re.findall(r"\$\{user_config\.([^}]+)\}", json.dumps(config)))
    assert used == set(settings)
    for name in used:
        assert settings[name].get("required") or "default" in settings[name], name


def test_the_bundle_holds_the_server_sources_and_nothing_else(bundle: Path) -> None:
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        contents = {name: archive.read(name) for name in names}
    tracked = subprocess.run(
        ["git", "ls-files", "gguf_mcp/"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert names == BUNDLED_TOP_LEVEL | {n for n in tracked if n.endswith(".py")}
    assert not any(part.startswith(".") or part == "__pycache__" for n in names for part in n.split("/"))
    assert json.loads(contents["manifest.json"]) == manifest()
    for name in names - {"pyproject.toml"}:
        assert contents[name] == (ROOT / name).read_bytes(), name
    # The host runs `uv run`, which locks every extra: the test extra stays home.
    bundled = tomllib.loads(contents["pyproject.toml"].decode())
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())
    expected["project"].pop("optional-dependencies")
    assert bundled == expected
    everything = b"".join(contents.values())
    assert LLAMA_KEY.encode() not in everything


def test_untracked_files_never_reach_the_bundle(tmp_path: Path) -> None:
    """A key file or a venv left in the checkout stays out: files are picked from git's index."""
    spec = importlib.util.spec_from_file_location("build_bundle", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    build_bundle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_bundle)
    checkout = tmp_path / "checkout"
    (checkout / "gguf_mcp").mkdir(parents=True)
    for name in ("__init__.py", "__main__.py"):
        (checkout / "gguf_mcp" / name).write_text("")
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "gguf_mcp"], check=True)
    subprocess.run([*git, "commit", "-qm", "sources"], check=True)
    (checkout / "gguf_mcp" / "local_secrets.py").write_text(f"KEY = {LLAMA_KEY!r}\n")
    (checkout / "gguf_mcp" / ".venv" / "lib").mkdir(parents=True)
    (checkout / "gguf_mcp" / ".venv" / "lib" / "site.py").write_text("")
    files = build_bundle.bundle_files(checkout)
    assert set(files) == BUNDLED_TOP_LEVEL | {"gguf_mcp/__init__.py", "gguf_mcp/__main__.py"}


@pytest.mark.anyio
async def test_the_unpacked_bundle_answers_chat_started_as_claude_desktop_starts_it(
    unpacked: Path, node_tools: NodeTools, llama_server: LlamaServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # The user fills the form: a llama-server's base URL and its key; deployment id and deadline untouched.
    config = host_config(node_tools, unpacked, {"base_url": llama_server.url, "api_key": llama_server.api_key}, home)
    assert config["command"] == "uv"
    assert config["args"] == ["run", "--project", str(unpacked), "gguf-mcp"]
    assert config["env"] == {
        "GGUF_DEPLOYMENT_ID": "",
        "GGUF_BASE_URL": llama_server.url,
        "MODELSLAB_API_KEY": llama_server.api_key,
        "GGUF_MCP_DEADLINE": "50",
    }
    # The host's uv: the only `uv` on a desktop PATH here is the pinned one.
    host_bin = tmp_path / "host-bin"
    host_bin.mkdir()
    (host_bin / "uv").symlink_to(UV)
    env = {
        "PATH": f"{host_bin}:{DESKTOP_PATH}",
        "HOME": str(home),
        "UV_CACHE_DIR": str(cache_root() / "uv-cache"),
        "UV_PYTHON_DOWNLOADS": "never",  # no network for a Python download; the system Python 3 serves
        **TLS,
        **config["env"],
    }
    params = StdioServerParameters(command=config["command"], args=config["args"], env=env, cwd=str(home))
    errlog = tmp_path / "server.stderr"
    progress_seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        progress_seen.append(progress)

    started = time.monotonic()
    try:
        with errlog.open("w") as err:
            async with Client(stdio_client(params, errlog=err), read_timeout_seconds=START_TIMEOUT_S) as client:
                initialized = time.monotonic() - started
                tools = [t.name for t in (await client.list_tools()).tools]
                result = await client.call_tool(
                    "chat", {"messages": USER, "max_tokens": 2}, progress_callback=on_progress
                )
    except Exception as exc:
        raise AssertionError(f"the bundle's server failed; its stderr:\n{errlog.read_text()[-3000:]}") from exc
    assert tools == list(TOOL_NAMES)
    assert not result.is_error, result
    assert result.structured_content is not None
    assert result.structured_content["usage"]["completion_tokens"] == 2
    assert result.structured_content["model"] == llama_server.model_id
    assert progress_seen  # notifications/progress reach the host
    # uv installed the dependencies into the bundle's own folder, and the server ran from it.
    venv_python = unpacked / ".venv" / "bin" / "python"
    imported = (
        (
            await anyio.run_process(
                [str(venv_python), "-c", "import gguf_mcp; print(gguf_mcp.__file__)"],
                env={"PATH": DESKTOP_PATH},
                cwd=home,
            )
        )
        .stdout.decode()
        .strip()
    )
    assert Path(imported).is_relative_to(unpacked), imported
    log = errlog.read_text()
    assert LLAMA_KEY not in log + json.dumps(result.model_dump(mode="json"))
    installs = re.findall(r"Installed (\d+) packages", log)
    print(
        f"bundle server: initialized in {initialized:.1f} s (uv: {', '.join(installs) or 'no'} packages installed), "
        f"chat answered at {time.monotonic() - started:.1f} s"
    )
