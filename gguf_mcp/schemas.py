"""Tool schemas, compacted and portable: every character of `tools/list` is context the agent pays for,
and every client must read the schema as meant.

The SDK generates JSON Schemas from the tools' signatures; these functions shrink them without
changing what they accept from an agent that omits optional arguments, in the subset of JSON
Schema that agent frameworks convert without loss (checked in tests/test_schema_portability.py):

- a union is `anyOf` of complete schemas, never a `"type": [..]` list (the Inspector's portability
  report warns of those; llama-index keeps only their first type);
- every array says what its items are (Pydantic AI's OpenAI strict mode refuses untyped arrays);
- every optional argument also accepts `null` (strict converters make every argument required);
- an object without properties is closed or free-form on purpose: the input schema of a tool
  without arguments says `"additionalProperties": false` (the OpenAI Agents SDK otherwise falls
  back from strict mode), and a free-form argument stays `{"type": "object"}`.
"""

from __future__ import annotations

from typing import Any


def prune(schema: dict[str, Any], levels: int) -> None:
    """Keep `levels` levels of nested properties; below that, objects and arrays keep only their type.

    Meant for output schemas: they outline the result, whose fields describe themselves, so what is
    always present (`required`) is left for the result to show.
    """
    schema.pop("required", None)
    for prop in schema.get("properties", {}).values():
        if levels <= 1:
            for key in ("properties", "required", "items", "description"):
                prop.pop(key, None)
        else:
            prune(prop.get("items", prop) if prop.get("type") == "array" else prop, levels - 1)


def compact(schema: dict[str, Any]) -> None:
    """Shrink a generated schema without changing what it accepts from an agent that omits
    optional arguments: every character of `tools/list` is context the agent pays for.

    Drops titles and defaults, `"additionalProperties": true` (the default), the `null` branch
    of optional fields (`accept_null` puts one back on each optional argument, the same way for
    all) and inlines `$defs`. A root without
    properties (a tool without arguments) is closed.
    """
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return walk(defs[node["$ref"].rsplit("/", 1)[1]])
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("title", "default") or (key == "additionalProperties" and value is True):
                continue
            out[key] = {k: walk(v) for k, v in value.items()} if key == "properties" else walk(value)
        branches = out.get("anyOf")
        if branches and {"type": "null"} in branches:
            rest = [b for b in branches if b != {"type": "null"}]
            del out["anyOf"]
            out = {**rest[0], **out} if len(rest) == 1 else {"anyOf": rest, **out}
        return out

    compacted = walk(schema)
    if compacted.get("properties") == {}:
        compacted["additionalProperties"] = False
    schema.clear()
    schema.update(compacted)


NULL = {"type": "null"}


def accept_null(schema: dict[str, Any]) -> None:
    """Let every optional argument of a compacted input schema also accept `null`, meaning unset.

    Strict converters (OpenAI strict mode, as the OpenAI Agents SDK and Pydantic AI apply it) make
    every argument required, so a model must send each one: with a `null` branch it can still
    leave a temperature, a seed or a deadline to the deployment instead of inventing one. The
    tools treat None as unset.
    """
    required = set(schema.get("required", ()))
    properties = schema.get("properties", {})
    for name, prop in properties.items():
        if name in required:
            continue
        if "anyOf" in prop:
            prop["anyOf"] = [*prop["anyOf"], NULL]
        else:
            properties[name] = {"anyOf": [prop, NULL]}
