"""What a tool call itself did wrong, or was refused: invalid arguments, what a client may use, its limits,
a full deployment."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from gguf_mcp.bodies import cut, plain
from gguf_mcp.errors.family import MAX_NAME, ClientLimitReached, ConfigError, NotAllowed, UpstreamBusy


def invalid_arguments(tool: str, error: ValidationError, schema: dict[str, Any]) -> str:
    """One line per argument: the argument, what was wrong with it, what is accepted."""
    lines: dict[str, str] = {}
    for problem in error.errors(include_url=False):
        loc = [str(part) for part in problem["loc"]]
        if not loc or loc[0] in lines:
            continue  # one line per argument: the first problem pydantic found with it
        where = ".".join(loc[: 3 if len(loc) > 1 and loc[1].isdigit() else 1])
        got = "" if problem["type"] == "missing" else f" (got {cut(repr(problem['input']), 60)})"
        accepted = _accepted(schema.get("properties", {}).get(loc[0], {}))
        lines[loc[0]] = f"- {where}: {problem['msg']}{got}" + (f"; accepted: {accepted}" if accepted else "")
    return f"Invalid arguments for {tool} (nothing was sent):\n" + "\n".join(lines.values())


def _accepted(schema: dict[str, Any]) -> str:
    """What a property's schema accepts, in a few words."""
    if "anyOf" in schema:
        return " or ".join(filter(None, (_accepted(branch) for branch in schema["anyOf"])))
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"])) + _bounds(schema)
    kinds = schema.get("type")
    text = " or ".join(kinds) if isinstance(kinds, list) else str(kinds or "")
    if kinds == "array" and isinstance(schema.get("items"), dict) and "type" in schema["items"]:
        text += f" of {schema['items']['type']}s"
    return (text + _bounds(schema)).strip()


def _bounds(schema: dict[str, Any]) -> str:
    low, high = schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum")
    if low is None:
        span = ""
    elif high is not None:
        span = f" from {low} to {high}"
    else:
        span = f" above {low}" if "exclusiveMinimum" in schema else f" of at least {low}"
    return span + (f" (at most {schema['maxItems']} items)" if "maxItems" in schema else "")


# --- What a client may use: its scopes, tools and deployments (`[clients.<name>]`, OAuth scopes) ---

_NOTHING_SENT = "Nothing was sent."


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def scope_missing(client: str, what: str, scope: str, granted: Iterable[str]) -> NotAllowed:
    """`what` ("tool chat", "resource gguf://deployments") needs `scope`, which the caller lacks."""
    return NotAllowed(
        f"Client {client!r} may not use {what}: it needs the scope {scope}, and this client has {_names(granted)}. "
        f"{_NOTHING_SENT} An OAuth client signs in again asking for {scope}; a named client's table lists it in "
        "`scopes`."
    )


def tool_not_listed(client: str, tool: str, tools: Iterable[str]) -> NotAllowed:
    return NotAllowed(
        f"Client {client!r} may not call {tool}: its tools are {_names(tools)} (`tools` in [clients.{client}]). "
        f"{_NOTHING_SENT}"
    )


def deployment_not_allowed(client: str, name: str, allowed: Iterable[str]) -> NotAllowed:
    return NotAllowed(
        f"Client {client!r} may not use deployment {cut(name, MAX_NAME)!r}. Its deployments: {_names(allowed)}. "
        f"{_NOTHING_SENT}"
    )


def default_not_allowed(client: str, default: str, allowed: Iterable[str]) -> NotAllowed:
    """A call without `deployment`, whose default the caller may not use."""
    return NotAllowed(
        f"This call names no deployment, and the default one ({default!r}) is not one client {client!r} may use: "
        f"name one of {_names(allowed)} in `deployment`. {_NOTHING_SENT}"
    )


# --- Fair share: a deployment's slots, a client's limits --------------------------------------


def saturated(deployment: str, waited: float, slots: int, ahead: int, bound: str) -> UpstreamBusy:
    """A call that waited for a free slot until its deadline or the read time-out (`bound` names which)."""
    return UpstreamBusy(
        f"Deployment {deployment!r} had no free slot for {waited:g} s ({bound}): its {slots} slots stayed busy and "
        f"{ahead} calls were ahead of this one; nothing was sent. Try again later, or ask the operator for more "
        "slots (llama-server --parallel, or max_concurrency in its table)."
    )


def _until(resets_at: float, now: float) -> str:
    left = max(0, round(resets_at - now))
    when = datetime.fromtimestamp(resets_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{when} (in {left // 3600} h {left % 3600 // 60} min {left % 60} s)"


def concurrent_limit(client: str, value: int) -> ClientLimitReached:
    return ClientLimitReached(
        f"Client {client!r} already has {value} calls in flight (queued ones included), its limit (max_concurrent = "
        f"{value}); nothing was sent. Retry when one of them ends.",
        limit="max_concurrent",
        value=value,
    )


def token_limit(client: str, limit: str, value: int, used: int, resets_at: float, now: float) -> ClientLimitReached:
    """Over `tokens_per_hour` or `tokens_per_day`: `resets_at` (epoch s) is when its use drops below the limit."""
    window = "hour" if limit == "tokens_per_hour" else "24 hours"
    return ClientLimitReached(
        f"Client {client!r} used {used} tokens in the last {window}, its limit ({limit} = {value}); nothing was sent. "
        f"It frees up at {_until(resets_at, now)}, as older calls leave the window.",
        limit=limit,
        value=value,
        resets_at=resets_at,
    )


def max_tokens_refused(client: str, asked: int, value: int) -> ClientLimitReached:
    return ClientLimitReached(
        f"max_tokens = {asked} is over client {client!r}'s limit (max_tokens = {value}, over_max_tokens = "
        f'"refuse"); nothing was sent. Ask for {value} or fewer.',
        limit="max_tokens",
        value=value,
    )


def max_tokens_lowered(asked: int, value: int) -> str:
    """The note a result carries when the client's cap lowered the call's max_tokens."""
    return f"[max_tokens lowered from {asked} to {value}: this client's limit (max_tokens = {value}).]"


def audit_log_unwritable(target: str, reason: str) -> ConfigError:
    return ConfigError(
        f"GGUF_MCP_AUDIT_LOG={cut(plain(target), 200)} cannot be opened for appending ({reason}). Point it at a "
        "writable file, or set it to - for stderr."
    )


def metrics_dir_unusable(path: str) -> ConfigError:
    return ConfigError(
        f"PROMETHEUS_MULTIPROC_DIR={cut(plain(path), 200)} is not a directory gguf-mcp can write (each worker keeps "
        "its metrics there). Create it, empty, before starting the server; or unset it for a single process."
    )
