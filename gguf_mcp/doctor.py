"""`gguf-mcp doctor`: check the settings, then every deployment for real, one line per check.

Each deployment gets the requests the tools make, through the same `UpstreamClient` (so the
auth headers, routes and retries are the server's own): the shared health check
(`GET /v1/models`), then a one-token `POST /v1/chat/completions` and `POST /v1/messages`.
Failures print the text of the error gguf-mcp would report to an agent, which already says what
to do, after the error's label. Deployments are checked concurrently and printed in
configuration order. Imports no MCP SDK: it starts fast.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from gguf_mcp.config import Deployment, Settings
from gguf_mcp.dialects import CHAT, MESSAGES, MODELS, Endpoint
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
    no_model_listed,
    unexpected_shape,
)
from gguf_mcp.health import Health, check_models
from gguf_mcp.upstream import UpstreamClient, upstream_client

EXIT_OK = 0
EXIT_FAILED = 1
MAX_WAIT = 60.0
"""Seconds doctor waits for any one answer (less if GGUF_MCP_TIMEOUT is lower): a one-token
request that takes longer is a problem to report, not to sit through."""
PROBE = [{"role": "user", "content": "Say OK."}]
ROUTES = (("chat completion", CHAT, "chat"), ("messages", MESSAGES, "messages"))
"""What a one-token request is sent to: label, route, and the tool that uses the route."""

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

    def line(self) -> str:
        return f"{self.status:<4} {self.subject}: {self.text}"


def run_doctor(settings: Settings) -> int:
    """Print every check to stdout; 0 when all pass, 1 when any failed. Raises `ConfigError` only."""
    http, upstream = upstream_client(settings.model_copy(update={"timeout": min(settings.timeout, MAX_WAIT)}))
    if logging.getLogger().level > logging.DEBUG:
        # Retry warnings would interleave with the check lines; each check's outcome says it all.
        logging.getLogger("gguf_mcp.upstream").setLevel(logging.ERROR)
    return anyio.run(_doctor, settings, http, upstream)


async def _doctor(settings: Settings, http: Any, upstream: UpstreamClient) -> int:
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
    skipped = sum(c.status == "--" for c in checks)
    if failed:
        print(f"{failed} check{'s' if failed > 1 else ''} failed; fix {'them' if failed > 1 else 'it'} and run again.")
        return EXIT_FAILED
    note = f" ({skipped} not applicable)" if skipped else ""
    print(f"All {len(checks) - skipped} checks passed{note}: gguf-mcp is ready for your MCP client.")
    return EXIT_OK


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
    for label, route, tool in ROUTES:
        if tool not in tools:
            completions.append(_skip(name, f"{label} not checked: GGUF_MCP_TOOLS leaves the {tool} tool out"))
            continue
        if rejected is not None:
            completions.append(_skip(name, f"{label} not checked: the key was rejected"))
            continue
        took = time.monotonic()
        try:
            data = await upstream.post(dep, route, {"model": "local", "messages": PROBE, "max_tokens": 1})
            _expect(dep, route, label, data)
        except AuthenticationFailed as exc:
            rejected = exc
            completions.append(_skip(name, f"{label} not checked: the key was rejected"))
        except (DeploymentNotFound, NotSupported) as exc:
            # The model list answered, so the deployment exists: it is this route that is missing.
            hint = (
                f" ({MODELS.route} answered, so this server may not offer {route.route}: update llama-server, or leave "
                f"the {tool} tool out with GGUF_MCP_TOOLS.)"
            )
            completions.append(_fail(name, exc, label, hint if model.status == "ok" else ""))
        except UpstreamError as exc:
            completions.append(_fail(name, exc, label))
        else:
            ms = (time.monotonic() - took) * 1000
            completions.append(Check("ok", name, f"{label} answered (POST {route.route}, max_tokens 1, {ms:.0f} ms)"))
    key = _fail(name, rejected) if rejected is not None else _key_check(dep, [model, *completions])
    return [reachable, key, model, *completions]


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


def _expect(dep: Deployment, route: Endpoint, label: str, data: Any) -> None:
    """A 2xx answer must have its protocol's shape: `choices` (OpenAI) or `content` blocks (Anthropic)."""
    if route == CHAT:
        choices = data.get("choices") if isinstance(data, dict) else None
        valid = isinstance(choices, list) and bool(choices) and isinstance(choices[0], dict)
    else:
        valid = isinstance(data, dict) and isinstance(data.get("content"), list)
    if not valid:
        raise unexpected_shape(
            dep.name, f"a {label} response without the fields its protocol promises (starting {str(data)[:80]!r})"
        )
