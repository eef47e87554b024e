"""How a setting is declared (`setting()`), how users see it (`Option`), and what a field takes, in words.

A field declared with `setting()` carries its variable, flag and help; `options_of` lists those
fields for `--help`, the README table and server.json. `expected` reads a field's type and
constraints back as a phrase ("a whole number from 0 to 10"), so error messages never restate a
limit by hand.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field
from pydantic.config import JsonDict
from pydantic.fields import FieldInfo


@dataclass(frozen=True)
class Option:
    """One setting as users see it: its flag, its environment variable and its help."""

    dest: str
    flag: str
    env: str
    help: str
    metavar: str | None = None
    secret: bool = False
    switch: bool = False  # a flag without a value (sets "true"); its variable takes true/false
    file: bool = False  # the value is a path (server.json's "filepath")
    number: bool = False

    @property
    def setting(self) -> str:
        """How error messages name it: the variable, and the flag when there is one."""
        return f"{self.env} ({self.flag})" if self.flag else self.env


def setting(
    default: Any,
    env: str,
    flag: str,
    help: str,
    *,
    metavar: str | None = None,
    secret: bool = False,
    switch: bool = False,
    file: bool = False,
    **constraints: Any,
) -> Any:
    """A user-facing field: its default, constraints, and how users set it."""
    extra: JsonDict = {"env": env, "flag": flag, "metavar": metavar, "secret": secret, "switch": switch, "file": file}
    return Field(default, description=help, json_schema_extra=extra, **constraints)


def options_of(model: type[BaseModel]) -> tuple[Option, ...]:
    """The fields of `model` declared with `setting()`, in declaration order."""
    options = []
    for dest, field in model.model_fields.items():
        extra = field.json_schema_extra
        if not isinstance(extra, dict):
            continue
        options.append(
            Option(
                dest=dest,
                flag=str(extra["flag"]),
                env=str(extra["env"]),
                help=field.description or "",
                metavar=extra["metavar"] if isinstance(extra["metavar"], str) else None,
                secret=bool(extra["secret"]),
                switch=bool(extra["switch"]),
                file=bool(extra["file"]),
                number=_value_type(field) in (int, float),
            )
        )
    return tuple(options)


def _value_type(field: FieldInfo) -> Any:
    """The field's type without `| None`."""
    annotation = field.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        kept = [arg for arg in get_args(annotation) if arg is not type(None)]
        return kept[0] if len(kept) == 1 else annotation
    return annotation


def _bounds(field: FieldInfo) -> dict[str, Any]:
    return {name: getattr(m, name) for m in field.metadata for name in ("gt", "ge", "le") if hasattr(m, name)}


def _whole_number(bounds: dict[str, Any]) -> str:
    low = bounds.get("ge", bounds["gt"] + 1 if "gt" in bounds else None)
    high = bounds.get("le")
    if low is not None and high is not None:
        return f"a whole number from {low} to {high}"
    return "a positive whole number" if low == 1 else "a whole number"


def _number(bounds: dict[str, Any], field: FieldInfo) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    unit = " of seconds" if extra.get("metavar") == "SECONDS" else ""
    return f"a positive number{unit}" if bounds.get("gt") == 0 else f"a number{unit}"


def _choices(values: tuple[Any, ...]) -> str:
    # Shown lowercased: the fields with choices take any case.
    quoted = [repr(str(v).lower()) for v in values]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def expected(field: FieldInfo) -> str | None:
    """What a number, switch or choice field takes, in words, from its type and constraints (else None)."""
    kind = _value_type(field)
    if kind is bool:
        return "true or false"
    if kind is int:
        return _whole_number(_bounds(field))
    if kind is float:
        return _number(_bounds(field), field)
    if get_origin(kind) is Literal:
        return _choices(get_args(kind))
    return None
