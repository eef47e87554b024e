#!/usr/bin/env python3
"""Build gguf-mcp.mcpb, the MCP Bundle Claude Desktop installs with a double click.

    .venv/bin/python scripts/build-bundle.py            # -> dist/gguf-mcp.mcpb
    .venv/bin/python scripts/build-bundle.py --out X.mcpb

Anthropic's own CLI does the work, pinned: ``mcpb validate manifest.json``, then ``mcpb pack``
on a staging folder. ``@anthropic-ai/mcpb`` and Node 22 come from the npm registry, installed
once into ``~/.cache/gguf-mcp`` by ``tests/support/node_tools.py`` (needs ``npm`` on PATH the
first time and the ``test`` extra: ``pip install -e '.[test]'``).

What goes in is named here, not found by walking the checkout: ``manifest.json``,
``pyproject.toml`` (the server type is ``uv``: the host installs the dependencies from it),
``README.md`` (the build backend reads it) and the files of ``gguf_mcp/`` that git tracks. So
a ``.venv``, caches, a ``.env`` or any other untracked file never ride along.

The bundle's ``pyproject.toml`` is the checkout's without ``[project.optional-dependencies]``:
``uv run`` locks every extra for every Python the project allows, and the ``test`` extra's pins
(hypothesis needs Python >= 3.11) make that lock fail on the host before the server starts.

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
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL_FILES = ("manifest.json", "pyproject.toml", "README.md")
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


def build(out: Path, root: Path = ROOT) -> Path:
    """Validate the manifest, stage the bundle's files, and pack them into `out`."""
    sys.path.insert(0, str(root))
    from tests.support.node_tools import ensure_node_tools

    tools = ensure_node_tools()
    check_manifest(root)
    env = tools.env({"NO_COLOR": "1"})
    subprocess.run(tools.mcpb_argv("validate", str(root / "manifest.json")), env=env, check=True, timeout=120)
    with tempfile.TemporaryDirectory(prefix="gguf-mcp-bundle-") as staging_dir:
        staging = Path(staging_dir) / "gguf-mcp"
        for name in bundle_files(root):
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if name == "pyproject.toml":
                target.write_text(runtime_pyproject((root / name).read_text()))
            else:
                shutil.copyfile(root / name, target)
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(tools.mcpb_argv("pack", str(staging), str(out)), env=env, check=True, timeout=300)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to write the bundle ({DEFAULT_OUT})")
    args = parser.parse_args(argv)
    try:
        built = build(args.out.resolve())
    except (BuildError, subprocess.CalledProcessError) as exc:
        print(f"build-bundle: {exc}", file=sys.stderr)
        return 1
    print(f"built {built}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
