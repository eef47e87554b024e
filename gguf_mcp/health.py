"""Is a deployment up, and what does it serve: `GET /v1/models`, checked one way for everyone.

`list_models` and the resources (with the server's retries, through `query_models`), `/readyz`
(quick, no retries) and `gguf-mcp doctor` (its first checks) all ask `check_models`, so they
agree on what "ready" means and name a failure with the same label.
Whatever goes wrong becomes a `GGUFMCPError` in the result: a health check answers, it does
not raise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
from pydantic import BaseModel

from gguf_mcp.catalog import ModelInfo, parse_models
from gguf_mcp.config import Deployment
from gguf_mcp.dialects import MODELS
from gguf_mcp.errors import GGUFMCPError, check_crashed, error_text, no_answer_within
from gguf_mcp.upstream import RetryPolicy, UpstreamClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Health:
    """One deployment's answer to `GET /v1/models`: its models, or why there are none."""

    deployment: Deployment
    models: list[ModelInfo] = field(default_factory=list)
    error: GGUFMCPError | None = None
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str:
        """ "ok", or the error's short, secret-free name (what `/readyz` and `doctor` show)."""
        return "ok" if self.error is None else self.error.label


async def check_models(
    upstream: UpstreamClient, dep: Deployment, *, within: float | None = None, retry: RetryPolicy | None = None
) -> Health:
    """Ask one deployment for its models, waiting at most `within` s; never raises (but for cancellation)."""
    started = time.monotonic()
    try:
        with anyio.fail_after(within):
            data = await upstream.get(dep, MODELS, retry=retry)
        models = parse_models(dep, data)
    except GGUFMCPError as exc:
        return Health(dep, error=exc, elapsed_ms=_ms(started))
    except TimeoutError:
        return Health(dep, error=no_answer_within(dep.name, dep.base_url, within or 0.0), elapsed_ms=_ms(started))
    except Exception as exc:  # a health check must answer whatever happens; the log keeps the cause
        log.exception("Checking deployment %r failed unexpectedly", dep.name)
        return Health(dep, error=check_crashed(dep.name, exc), elapsed_ms=_ms(started))
    return Health(dep, models=models, elapsed_ms=_ms(started))


async def check_all(
    upstream: UpstreamClient,
    deployments: Sequence[Deployment],
    *,
    within: float | None = None,
    retry: RetryPolicy | None = None,
) -> list[Health]:
    """Every deployment checked at once, answers in the order given."""
    found: list[Health | None] = [None] * len(deployments)

    async def one(index: int) -> None:
        found[index] = await check_models(upstream, deployments[index], within=within, retry=retry)

    async with anyio.create_task_group() as tg:
        for index in range(len(deployments)):
            tg.start_soon(one, index)
    return [h for h in found if h is not None]


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


class DeploymentModels(BaseModel):
    """One deployment as `list_models` and the resources show it: its models, or why there are none."""

    deployment: str
    description: str | None = None
    default: bool = False
    models: list[ModelInfo] = []
    error: str | None = None


class ModelsResult(BaseModel):
    deployments: list[DeploymentModels]


async def query_models(upstream: UpstreamClient, targets: Sequence[Deployment], default: str) -> list[DeploymentModels]:
    """Every target's models, queried concurrently with the server's retries; a failure stays in its
    entry, as `error_text` shows it (the resources' JSON and list_models alike)."""
    return [
        DeploymentModels(
            deployment=health.deployment.name,
            description=health.deployment.description or None,
            default=health.deployment.name == default,
            models=health.models,
            error=error_text(health.error, upstream.redactor) if health.error else None,
        )
        for health in await check_all(upstream, targets)
    ]
