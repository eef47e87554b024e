"""Lint, format, strict typing and the house rules are part of the suite, so one command checks everything."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
import radon.complexity

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_code_quality(command: list[str]) -> None:
    out = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr


# --- The house: what a maintainer finds where (issue 18's rules, kept as tests) -------------------

PACKAGE = ROOT / "gguf_mcp"
MAX_MODULE_LINES = 450
MAX_MEAN_COMPLEXITY = 3.2
"""radon's mean cyclomatic complexity (httpx: 2.79; the SDK's server package: 3.21)."""


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """The modules `path` imports (absolute names; `from . import x` resolved against its package)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_module_is_longer_than_a_room_should_be() -> None:
    long = {
        str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these by job (at most {MAX_MODULE_LINES} lines): {long}"


def test_only_the_server_imports_the_tools() -> None:
    importers = [str(p.relative_to(ROOT)) for p in _modules() if "gguf_mcp.tools" in _imports(p)]
    assert importers == ["gguf_mcp/server.py"], "state lives in state.py; only server.py wires the tools to it"


def test_every_package_imported_is_declared() -> None:
    """A third-party import is a dependency of pyproject.toml, named there (with what a user gets from it)."""
    declared = {
        re.split(r"[\[<>=;! ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    distributions = importlib.metadata.packages_distributions()
    imported = {name.split(".")[0] for path in _modules() for name in _imports(path)}
    third_party = imported - set(sys.stdlib_module_names) - {"gguf_mcp", "tomli"}
    providers = {top: {d.lower().replace("_", "-") for d in distributions.get(top, [top])} for top in third_party}
    undeclared = {top: sorted(names) for top, names in sorted(providers.items()) if not names & declared}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_mean_complexity_stays_low() -> None:
    blocks = [block for path in _modules() for block in radon.complexity.cc_visit(path.read_text())]
    mean = sum(block.complexity for block in blocks) / len(blocks)
    assert mean <= MAX_MEAN_COMPLEXITY, f"radon mean cyclomatic complexity {mean:.2f} > {MAX_MEAN_COMPLEXITY}"
