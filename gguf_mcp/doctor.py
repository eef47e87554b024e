"""`gguf-mcp doctor`: check the settings, then every deployment for real, one line per check.

Each deployment gets the requests the tools make, through the same `UpstreamClient` (so the
auth headers, routes and retries are the server's own): the shared health check
(`GET /v1/models`), then a one-token `POST /v1/chat/completions`, `POST /v1/messages` and
`POST /v1/completions` and a one-input `POST /v1/embeddings`, each only when its tool is offered.
Failures print the text of the error gguf-mcp would report to an agent, which already says what
to do, after the error's label. A deployment that does not serve completions or embeddings (a
chat model without `--embeddings`) is told so on a `--` line: information, not a failure.
Deployments are checked concurrently and printed in configuration order. Imports no MCP SDK: it starts fast.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from gguf_mcp.config import Deployment, Settings
from gguf_mcp.dialects import CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES, MODELS, Endpoint
from gguf_mcp.errors import (
    AuthenticationFailed,
    CertificateRejected,
    ConnectionFailed,
    DeploymentNotFound,
    DeploymentNotReady,
    DeploymentUnreachable,
    GGUFMCPError,
    NotSupported,
    NotTLS,
    ProxyFailed,
    RateLimited,
    Redirected,
    UpstreamBusy,
    UpstreamError,
    UpstreamTimeout,
    no_embeddings,
    no_model_listed,
    unexpected_shape,
)
from gguf_mcp.health import Health, check_models
from gguf_mcp.httpclient import Pool
from gguf_mcp.upstream import UpstreamClient, upstream_client

EXIT_OK = 0
EXIT_FAILED = 1
MAX_WAIT = 60.0
"""Seconds doctor waits for any one answer (less if GGUF_MCP_TIMEOUT is lower): a one-token
request that takes longer is a problem to report, not to sit through."""
PROBE = [{"role": "user", "content": "Say OK."}]
ONE_TOKEN = {"model": "local", "messages": PROBE, "max_tokens": 1}


@dataclass(frozen=True)
class Probe:
    """One small request to the route a tool uses, and what its answer must hold."""

    label: str
    endpoint: Endpoint
    tool: str
    body: dict[str, Any]
    sent: str
    """What was asked, for the line that reports the answer (e.g. "max_tokens 1")."""
    field: str
    """The answer's list that its protocol promises (`choices`, `content`, `data`)."""
    optional: Callable[[str, NotSupported], UpstreamError] | None = None
    """For a route a deployment may not serve (embeddings need an embedding model): the error its tool
    gives then, which doctor reports as information. None: a route every deployment serves."""


ROUTES = (
    Probe("chat completion", CHAT, "chat", ONE_TOKEN, "max_tokens 1", "choices"),
    Probe("messages", MESSAGES, "messages", ONE_TOKEN, "max_tokens 1", "content"),
    Probe(
        "completion",
        COMPLETIONS,
        "complete",
        {"model": "local", "prompt": "Say OK.", "max_tokens": 1},
        "max_tokens 1",
        "choices",
        optional=lambda _, exc: exc,
    ),
    Probe("embeddings", EMBEDDINGS, "embed", {"input": "OK"}, "one input", "data", optional=no_embeddings),
)

Status = Literal["ok", "FAIL", "--"]

_BLOCKING = (
    ConnectionFailed,
    CertificateRejected,
    NotTLS,
    ProxyFailed,
    Redirected,
    UpstreamTimeout,
    UpstreamBusy,
    DeploymentNotReady,
    DeploymentUnreachable,
    RateLimited,
)
"""Failures of the model list after which the deployment's other routes cannot answer either."""


@dataclass(frozen=True)
class Check:
    """One printed line: a status, the deployment (or "configuration") and what was found."""

    status: Status
    subject: str
    text: str
    not_served: bool = False

    def line(self) -> str:
        return f"{self.status:<4} {self.subject}: {self.text}"


def run_doctor(settings: Settings) -> int:
    """Print every check to stdout; 0 when all pass, 1 when any failed. Raises `ConfigError` only."""
    http, upstream = upstream_client(settings.model_copy(update={"timeout": min(settings.timeout, MAX_WAIT)}))
    if logging.getLogger().level > logging.DEBUG:
        # Retry warnings would interleave with the check lines; each check's outcome says it all.
        logging.getLogger("gguf_mcp.upstream").setLevel(logging.ERROR)
    return anyio.run(_doctor, settings, http, upstream)


async def _doctor(settings: Settings, http: Pool, upstream: UpstreamClient) -> int:
    redactor = upstream.redactor
    checks: list[Check] = []

    def emit(check: Check) -> None:
        checks.append(check)
        print(redactor.text(check.line()), flush=True)

    names = ", ".join(settings.deployments)
    default = f"; default {settings.default_deployment}" if len(settings.deployments) > 1 else ""
    emit(Check("ok", "configuration", f"valid; deployments: {names}{default}"))

    deployments = list(settings.deployments.values())
    found: list[list[Check]] = [[] for _ in deployments]
    finished = [anyio.Event() for _ in deployments]

    async with http:
        http.client()  # built now (it is built on first use): no check's time includes building it

        async def check(index: int) -> None:
            try:
                found[index] = await check_deployment(upstream, deployments[index], settings.tools)
            finally:
                finished[index].set()

        async with anyio.create_task_group() as tg:
            for index in range(len(deployments)):
                tg.start_soon(check, index)
            for index in range(len(deployments)):
                await finished[index].wait()
                for item in found[index]:
                    emit(item)

    failed = sum(c.status == "FAIL" for c in checks)
    if failed:
        print(f"{failed} check{'s' if failed > 1 else ''} failed; fix {'them' if failed > 1 else 'it'} and run again.")
        return EXIT_FAILED
    print(_passed(checks))
    return EXIT_OK


def _passed(checks: list[Check]) -> str:
    unserved = sum(c.not_served for c in checks)
    skipped = sum(c.status == "--" for c in checks) - unserved
    notes = {f"{skipped} not applicable": skipped, f"{unserved} route{'s' * (unserved > 1)} not served": unserved}
    note = ", ".join(text for text, count in notes.items() if count)
    note = f" ({note})" if note else ""
    return f"All {len(checks) - skipped - unserved} checks passed{note}: gguf-mcp is ready for your MCP client."


async def check_deployment(upstream: UpstreamClient, dep: Deployment, tools: tuple[str, ...]) -> list[Check]:
    """Reachable, key accepted, model listed, then one token on each selected protocol."""
    name = dep.name
    health = await check_models(upstream, dep)
    if isinstance(health.error, _BLOCKING):
        return [_fail(name, health.error), _skip(name, "key, model and completions not checked until this is fixed")]
    reachable = _reachable(dep, health)
    if isinstance(health.error, AuthenticationFailed | DeploymentNotFound):
        return [
            reachable,
            _fail(name, health.error),
            _skip(name, "model and completions not checked until this is fixed"),
        ]
    model = _model_check(health)

    completions: list[Check] = []
    rejected: GGUFMCPError | None = None
    for probe in ROUTES:
        if probe.tool not in tools:
            text = f"{probe.label} not checked: GGUF_MCP_TOOLS leaves the {probe.tool} tool out"
            completions.append(_skip(name, text))
        elif rejected is not None:
            completions.append(_skip(name, f"{probe.label} not checked: the key was rejected"))
        else:
            try:
                completions.append(await _send(upstream, dep, probe, model.status == "ok"))
            except AuthenticationFailed as exc:
                rejected = exc
                completions.append(_skip(name, f"{probe.label} not checked: the key was rejected"))
    key = _fail(name, rejected) if rejected is not None else _key_check(dep, [model, *completions])
    return [reachable, key, model, *completions]


async def _send(upstream: UpstreamClient, dep: Deployment, probe: Probe, model_listed: bool) -> Check:
    """One probe's line; raises `AuthenticationFailed` (the key check reports it)."""
    took = time.monotonic()
    route = probe.endpoint.route
    try:
        _expect(dep, probe, await upstream.post(dep, probe.endpoint, probe.body))
    except AuthenticationFailed:
        raise  # the key check reports it, once
    except NotSupported as exc:
        if probe.optional is None:
            return _missing_route(dep, probe, exc, model_listed)
        told = probe.optional(dep.name, exc)  # what the tool will answer
        hint = f"The {probe.tool} tool answers so when called; if that is expected, leave it out with GGUF_MCP_TOOLS."
        return Check("--", dep.name, f"{probe.label} not served: {told} {hint}", not_served=True)
    except DeploymentNotFound as exc:
        return _missing_route(dep, probe, exc, model_listed)
    except UpstreamError as exc:
        return _fail(dep.name, exc, probe.label)
    ms = (time.monotonic() - took) * 1000
    return Check("ok", dep.name, f"{probe.label} answered (POST {route}, {probe.sent}, {ms:.0f} ms)")


def _missing_route(dep: Deployment, probe: Probe, exc: UpstreamError, model_listed: bool) -> Check:
    # The model list answered, so the deployment exists: it is this route that is missing.
    hint = (
        f" ({MODELS.route} answered, so this server may not offer {probe.endpoint.route}: update llama-server, or "
        f"leave the {probe.tool} tool out with GGUF_MCP_TOOLS.)"
    )
    return _fail(dep.name, exc, probe.label, hint if model_listed else "")


def _fail(subject: str, exc: GGUFMCPError | None, label: str = "", hint: str = "") -> Check:
    """The error's own text (what happened, what to do), after a short label for scanning."""
    return Check("FAIL", subject, f"{label or (exc.label if exc else 'error')}: {exc}{hint}")


def _skip(subject: str, text: str) -> Check:
    return Check("--", subject, text)


def _reachable(dep: Deployment, health: Health) -> Check:
    status = health.error.status if isinstance(health.error, UpstreamError) else None
    answer = f"answered HTTP {status}" if status else "answered"
    return Check(
        "ok", dep.name, f"reachable at {dep.base_url} (GET {MODELS.route} {answer} in {health.elapsed_ms:.0f} ms)"
    )


def _key_check(dep: Deployment, answers: list[Check]) -> Check:
    if not any(a.status == "ok" for a in answers):
        return Check("--", dep.name, "key not confirmed: no request succeeded")
    if dep.api_key is None:
        return Check("ok", dep.name, f"no key needed ({dep.key_env} is not set and the server asked for none)")
    return Check("ok", dep.name, f"key accepted ({dep.key_env})")


def _model_check(health: Health) -> Check:
    dep = health.deployment
    if health.error is not None:
        return _fail(dep.name, health.error, "model list")
    if not health.models:
        return Check("FAIL", dep.name, str(no_model_listed(dep.name, MODELS.route)))
    described = [(m.id, f" (context {m.context_size})" if m.context_size else "") for m in health.models]
    if len(described) == 1:
        return Check("ok", dep.name, "model {} listed{}".format(*described[0]))
    return Check("ok", dep.name, "models {} listed".format(", ".join(i + c for i, c in described)))


def _expect(dep: Deployment, probe: Probe, data: Any) -> None:
    """A 2xx answer must have its protocol's shape: `choices`, `content` blocks or `data` items."""
    items = data.get(probe.field) if isinstance(data, dict) else None
    shaped = isinstance(items, list) and all(isinstance(item, dict) for item in items)
    if not shaped or not (items or probe.field == "content"):  # a one-token message may hold no text block
        raise unexpected_shape(
            dep.name,
            f"a {probe.label} response without the fields its protocol promises (starting {str(data)[:80]!r})",
        )
