"""Reading raw values from files and the environment, before anything is validated.

Every reader names the setting it serves in its errors, and never quotes a secret: a file's
problem is told by its path and a position, not by what it holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from gguf_mcp.errors import ConfigError

_SECRET_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET", "_PASSWORD")


def expand_user(path: Path) -> Path:
    """`path` with `~` or `~user` expanded; ValueError when that home directory is unknown."""
    try:
        return path.expanduser()
    except RuntimeError:
        raise ValueError(f"{str(path)!r} starts with a ~ whose home directory is unknown; give the full path") from None


def read_text(path: Path, setting: str) -> str:
    try:
        raw = expand_user(path).read_bytes()
    except ValueError as exc:
        raise ConfigError(f"{setting}: {exc}.") from None
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {str(path)!r} ({exc.strerror}).") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{setting}: {str(path)!r} is not UTF-8 text (byte {exc.start + 1} is invalid); save it as UTF-8."
        ) from None


def check_one_visible_line(secret: str, subject: str = "the value") -> None:
    """A key or token is one line of visible characters; say where it is not (never what it holds)."""
    bad = next((i for i, c in enumerate(secret) if not c.isprintable() or c.isspace()), None)
    if bad is not None:
        raise ValueError(
            f"{subject} has whitespace or a control character at position {bad + 1} (a second line, a pasted "
            "CR/LF?); it must be one line of visible characters: copy it again"
        )


def _visible_line(value: str, path: str, setting: str) -> str:
    try:
        check_one_visible_line(value, repr(path))
    except ValueError as exc:
        raise ConfigError(f"{setting}: {exc}.") from None
    return value


def read_secret_file(path: str, setting: str) -> str:
    """A file holding one secret; errors name the file's own setting (`setting`), not the secret's."""
    value = read_text(Path(path), setting)
    # One trailing line break is how editors save a file; anything else inside is a mistake.
    value = value.removesuffix("\n").removesuffix("\r")
    if not value.strip():
        raise ConfigError(f"{setting}: {path!r} is empty; put the secret in it.")
    return _visible_line(value, path, setting)


def read_client_file(path: str, setting: str) -> tuple[str, str]:
    """A file holding an OAuth client's id on its first line and its secret on its second."""
    lines = read_text(Path(path), setting).splitlines()
    if len(lines) != 2 or not all(lines):
        raise ConfigError(f"{setting}: {path!r} must hold two non-empty lines: the client id, then the client secret.")
    client_id, secret = (_visible_line(line, path, setting) for line in lines)
    return client_id, secret


def secret_from_env(environ: Mapping[str, str], name: str) -> SecretStr | None:
    """A key named by a TOML table's `api_key_env`, checked as the settings' own secrets are."""
    value = environ.get(name, "")
    if not value:
        return None
    try:
        check_one_visible_line(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}.") from None
    return SecretStr(value)


def secret_candidates(environ: Mapping[str, str]) -> list[str]:
    """Values that may be secret before the settings exist: to mask them in a configuration error."""
    return [v for k, v in environ.items() if k.upper().endswith(_SECRET_SUFFIXES) and len(v) >= 8]
