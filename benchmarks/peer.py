"""The peer to beat: npm `llama-mcp-server` 0.1.1 (ahays248, the only llama.cpp-specific bridge) on Node 22.

`ensure_peer()` installs it once per machine into
``${GGUF_MCP_CACHE:-~/.cache/gguf-mcp}/peer-llama-mcp-server-<hash>/`` with the same recipe as
`tests.support.node_tools` (registry as of `NPM_BEFORE`, `--ignore-scripts`, a lock, a
temporary sibling renamed into place once verified), and runs it on the pinned Node 22 that
`ensure_node_tools()` provides.

What its source (dist/*.js in the package) says, and how the benchmark calls it:
- configuration: `LLAMA_SERVER_URL` (the upstream root; it appends `/v1/chat/completions`),
  `LLAMA_SERVER_TIMEOUT` (ms); it sends no API key, so its upstream must run keyless;
- the chat tool is `llama_chat(messages[{role, content}], max_tokens=256, temperature=0.7,
  top_p=0.9, stop?, seed?)`; it always sends max_tokens, temperature and top_p, never `model`
  nor `stream`, through Node's `fetch` (undici, keep-alive pool), and returns the upstream JSON
  pretty-printed as one text block.

    .venv/bin/python -m benchmarks.peer     # install if needed, print where and which versions
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.node_tools import (
    NPM_BEFORE,
    NodeToolsError,
    _exclusive_lock,
    cache_root,
    ensure_node_tools,
)

PACKAGE = "llama-mcp-server"
VERSION = "0.1.1"
LAYOUT = 1
CHAT_TOOL = "llama_chat"
ENTRY = f"node_modules/{PACKAGE}/dist/index.js"
SDK_PACKAGE = "@modelcontextprotocol/sdk"


@dataclass(frozen=True)
class Peer:
    node: Path
    entry: Path
    versions: dict[str, str]

    def command(self) -> tuple[str, list[str]]:
        return str(self.node), [str(self.entry)]

    def env(self, upstream: str) -> dict[str, str]:
        return {"PATH": os.environ["PATH"], "LLAMA_SERVER_URL": upstream, "LLAMA_SERVER_TIMEOUT": "120000"}


def _key() -> str:
    spec = {"layout": LAYOUT, "before": NPM_BEFORE, "dependencies": {PACKAGE: VERSION}}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _version(directory: Path, package: str) -> str:
    return str(json.loads((directory / "node_modules" / package / "package.json").read_text())["version"])


def _install(target: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise NodeToolsError(f"npm is not on PATH; it is needed once to install {PACKAGE}@{VERSION} into {target}")
    work = target.with_name(f"{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    work.mkdir(parents=True)
    try:
        package_json = {
            "name": "gguf-mcp-peer",
            "version": "0.0.0",
            "private": True,
            "dependencies": {PACKAGE: VERSION},
        }
        (work / "package.json").write_text(json.dumps(package_json, indent=2) + "\n")
        argv = [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--no-update-notifier"]
        argv += ["--before", NPM_BEFORE, "--loglevel", "warn"]
        proc = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=480, check=False)
        if proc.returncode != 0 or not (work / ENTRY).is_file():
            raise NodeToolsError(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
        if _version(work, PACKAGE) != VERSION:
            raise NodeToolsError(f"npm installed {PACKAGE} {_version(work, PACKAGE)}, expected {VERSION}")
        manifest = {
            "versions": {PACKAGE: VERSION, SDK_PACKAGE: _version(work, SDK_PACKAGE)},
            "npm_before": NPM_BEFORE,
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (work / "peer.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.rename(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def ensure_peer() -> Peer:
    """The installed peer and the Node to run it with (installing either on first use)."""
    node = ensure_node_tools().node
    root = cache_root()
    target = root / f"peer-{PACKAGE}-{_key()}"
    if not (target / "peer.json").is_file():
        with _exclusive_lock(root / f"{target.name}.lock", 540.0):
            if not (target / "peer.json").is_file():
                for stale in root.glob(f"{target.name}.tmp-*"):
                    shutil.rmtree(stale, ignore_errors=True)
                shutil.rmtree(target, ignore_errors=True)
                _install(target)
    versions = dict(json.loads((target / "peer.json").read_text())["versions"])
    reported = subprocess.run([str(node), "--version"], capture_output=True, text=True, check=False).stdout.strip()
    versions["node"] = reported.lstrip("v")
    return Peer(node, target / ENTRY, versions)


if __name__ == "__main__":
    peer = ensure_peer()
    print(f"{peer.node} {peer.entry}")
    print(json.dumps(peer.versions))
