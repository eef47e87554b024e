#!/usr/bin/env python3
"""Build gguf-mcp.mcpb, the MCP Bundle Claude Desktop installs with a double click.

    .venv/bin/python scripts/build-bundle.py                 # -> dist/gguf-mcp.mcpb, unsigned
    .venv/bin/python scripts/build-bundle.py --out X.mcpb
    .venv/bin/python scripts/build-bundle.py --cert cert.pem --key key.pem [--intermediate ca.pem]
    .venv/bin/python scripts/build-bundle.py --lock          # maintainers: refresh bundle/uv.lock

Anthropic's own CLI does the work, pinned: ``mcpb validate manifest.json``, then ``mcpb pack``
on a staging folder (and ``mcpb sign`` when given a certificate). ``@anthropic-ai/mcpb`` and
Node 22 come from the npm registry, installed once into ``~/.cache/gguf-mcp`` by
``tests/support/node_tools.py`` (standard library only: after a plain ``pip install .`` this
script needs only ``npm`` on PATH, the first time).

What goes in is named here, not found by walking the checkout: ``manifest.json``,
``pyproject.toml`` (the server type is ``uv``: the host installs the dependencies from it),
``uv.lock`` (the versions it installs), ``README.md`` (the build backend reads it) and the
files of ``gguf_mcp/`` that git tracks. So a ``.venv``, caches, a ``.env`` or any other
untracked file never ride along.

The bundle's ``pyproject.toml`` is the checkout's without ``[project.optional-dependencies]``:
``uv run`` locks every extra for every Python the project allows, and the ``test`` extra's pins
(hypothesis needs Python >= 3.11) make that lock fail on the host before the server starts.
Its lock is committed as ``bundle/uv.lock`` rather than made at build time: a build then needs
neither uv nor the network, and one commit gives one set of versions, whenever and wherever it
is built; a change of versions is a reviewed diff (``--lock`` makes it; the suite checks that the
lock matches the bundle's pyproject.toml). The manifest runs ``uv run --locked``: the host
installs exactly those versions, and a lock that does not match refuses to start instead of
resolving anew.

Same commit, same files with the same bytes. The archive itself differs from build to build
only in its timestamps (``mcpb pack`` stamps each entry with the time of packing).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL_FILES = ("manifest.json", "pyproject.toml", "uv.lock", "README.md")
LOCK = Path("bundle") / "uv.lock"
"""Where the checkout keeps the bundle's uv.lock (not at the root: it locks the bundle's pyproject.toml,
without the extras, which the checkout's own cannot be locked with)."""
PACKAGE = "gguf_mcp"
DEFAULT_OUT = ROOT / "dist" / "gguf-mcp.mcpb"


class BuildError(RuntimeError):
    """The bundle could not be built; the message says why."""


def bundle_files(root: Path = ROOT) -> list[str]:
    """The paths (relative to `root`) that go into the bundle."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", f"{PACKAGE}/"],
        cwd=root,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    package = sorted(p for p in listed.split("\0") if p.endswith(".py") or p.endswith("py.typed"))
    if f"{PACKAGE}/__main__.py" not in package:
        raise BuildError(f"git ls-files lists no {PACKAGE}/__main__.py under {root}: not a gguf-mcp checkout?")
    return [*TOP_LEVEL_FILES, *package]


def runtime_pyproject(text: str) -> str:
    """`text` (a pyproject.toml) without its ``[project.optional-dependencies]`` table."""
    kept: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            skipping = line.strip() == "[project.optional-dependencies]"
        if not skipping:
            kept.append(line)
    result = "".join(kept)
    expected: dict[str, Any] = tomllib.loads(text)
    expected["project"].pop("optional-dependencies", None)
    if tomllib.loads(result) != expected:
        raise BuildError("pyproject.toml: could not drop [project.optional-dependencies] cleanly")
    return result


def check_manifest(root: Path = ROOT) -> None:
    """The manifest names this version and the file it says is the entry point."""
    manifest = json.loads((root / "manifest.json").read_text())
    init = (root / PACKAGE / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', init, re.MULTILINE)
    if match is None or manifest["version"] != match.group(1):
        raise BuildError(
            f"manifest.json says version {manifest['version']!r} but {PACKAGE}/__init__.py says "
            f"{match.group(1) if match else None!r}: update manifest.json"
        )
    if not (root / manifest["server"]["entry_point"]).is_file():
        raise BuildError(f"manifest.json's entry_point {manifest['server']['entry_point']!r} does not exist")


class Signer(NamedTuple):
    """A code-signing certificate and its key (PEM), with any intermediate certificates: for `mcpb sign`."""

    cert: Path
    key: Path
    intermediates: tuple[Path, ...] = ()

    def argv(self) -> list[str]:
        more = ["--intermediate", *map(str, self.intermediates)] if self.intermediates else []
        return ["--cert", str(self.cert), "--key", str(self.key), *more]


def stage(staging: Path, root: Path = ROOT, *, with_lock: bool = True) -> None:
    """Write the bundle's files into `staging`, as they will be packed."""
    for name in bundle_files(root):
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name == "pyproject.toml":
            target.write_text(runtime_pyproject((root / name).read_text()))
        elif name == "uv.lock":
            if with_lock:
                shutil.copyfile(root / LOCK, target)
        else:
            shutil.copyfile(root / name, target)


def build(out: Path, root: Path = ROOT, signer: Signer | None = None) -> Path:
    """Validate the manifest, stage the bundle's files, pack them into `out`, and sign it if asked."""
    sys.path.insert(0, str(root))
    from tests.support.node_tools import ensure_node_tools

    tools = ensure_node_tools()
    check_manifest(root)
    if not (root / LOCK).is_file():
        raise BuildError(f"{LOCK} is missing: make it with scripts/build-bundle.py --lock")
    env = tools.env({"NO_COLOR": "1"})
    subprocess.run(tools.mcpb_argv("validate", str(root / "manifest.json")), env=env, check=True, timeout=120)
    with tempfile.TemporaryDirectory(prefix="gguf-mcp-bundle-") as staging_dir:
        staging = Path(staging_dir) / "gguf-mcp"
        stage(staging, root)
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(tools.mcpb_argv("pack", str(staging), str(out)), env=env, check=True, timeout=300)
    if signer is not None:
        subprocess.run(tools.mcpb_argv("sign", str(out), *signer.argv()), env=env, check=True, timeout=120)
    return out


def relock(root: Path = ROOT) -> Path:
    """Lock the bundle's pyproject.toml with uv into bundle/uv.lock, keeping every pin that still fits."""
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(uv).is_file():
        raise BuildError("--lock needs uv (pip install uv, or the test extra)")
    with tempfile.TemporaryDirectory(prefix="gguf-mcp-lock-") as staging_dir:
        staging = Path(staging_dir) / "gguf-mcp"
        stage(staging, root, with_lock=(root / LOCK).is_file())
        subprocess.run([uv, "lock", "--project", str(staging)], check=True, timeout=300)
        (root / LOCK).parent.mkdir(exist_ok=True)
        shutil.copyfile(staging / "uv.lock", root / LOCK)
    return root / LOCK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to write the bundle ({DEFAULT_OUT})")
    parser.add_argument("--cert", type=Path, help="sign with this code-signing certificate (PEM; needs --key)")
    parser.add_argument("--key", type=Path, help="the certificate's private key (PEM)")
    parser.add_argument("--intermediate", type=Path, nargs="*", default=[], help="intermediate certificates (PEM)")
    parser.add_argument("--lock", action="store_true", help=f"refresh {LOCK} from pyproject.toml (needs uv), then stop")
    args = parser.parse_args(argv)
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    signer = Signer(args.cert.resolve(), args.key.resolve(), tuple(args.intermediate)) if args.cert else None
    try:
        if args.lock:
            print(f"locked {relock()}")
            return 0
        built = build(args.out.resolve(), signer=signer)
    except (BuildError, subprocess.CalledProcessError) as exc:
        print(f"build-bundle: {exc}", file=sys.stderr)
        return 1
    print(f"built {built} ({built.stat().st_size / 1000:.0f} kB, {'signed' if signer else 'unsigned'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
