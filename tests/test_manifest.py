"""server.json: valid against the MCP Registry schema, and in step with the package and --help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gguf_mcp import __version__
from gguf_mcp.config import OPTIONS

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT.parent / "shared" / "schemas" / "server.schema.2025-12-11.json"
VENDORED_SCHEMA = ROOT / "tests" / "data" / "server.schema.2025-12-11.json"


def manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "server.json").read_text())
    return data


def test_server_json_is_valid_against_the_registry_schema() -> None:
    schema = json.loads(VENDORED_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(manifest())
    assert manifest()["$schema"] == schema["$id"]


def test_vendored_schema_matches_the_shared_copy() -> None:
    if not SCHEMA.exists():
        pytest.skip(f"no shared copy of the registry schema at {SCHEMA} to compare with")
    assert json.loads(SCHEMA.read_text()) == json.loads(VENDORED_SCHEMA.read_text())


def test_server_json_and_the_readme_table_are_derived_from_the_settings_model() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/sync-settings.py", "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_versions_match_the_package() -> None:
    data = manifest()
    assert data["version"] == __version__
    (package,) = data["packages"]
    assert package["version"] == __version__
    assert package["registryType"] == "pypi"
    assert package["identifier"] == "gguf-mcp"
    assert package["transport"] == {"type": "stdio"}


def test_every_setting_is_listed_with_the_help_text() -> None:
    (package,) = manifest()["packages"]
    listed = {v["name"]: v for v in package["environmentVariables"]}
    assert set(listed) == {o.env for o in OPTIONS}
    for option in OPTIONS:
        assert listed[option.env]["description"] == option.help
        assert listed[option.env].get("isSecret", False) is option.secret


def test_readme_carries_the_registry_ownership_marker() -> None:
    assert f"mcp-name: {manifest()['name']}" in (ROOT / "README.md").read_text()
