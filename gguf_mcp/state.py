"""What every request is served with: the settings, the one upstream client and the fair share.

The composition root (`gguf_mcp.cli`, or the HTTP app factory) builds one `AppState` per
process (`open_state`) and hands it to `gguf_mcp.server.build_server`, whose lifespan gives it to
every tool call. Transports and entry points import this module, never the tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gguf_mcp.config import Deployment, Settings
from gguf_mcp.errors import UnknownDeployment
from gguf_mcp.fairshare import AuditLog, FairShare
from gguf_mcp.httpclient import Pool
from gguf_mcp.upstream import UpstreamClient, upstream_client

if TYPE_CHECKING:  # the SDK's import costs a second: `gguf-mcp ask` and doctor import this module, never open_state
    from gguf_mcp.identity import IdentityVerifier


@dataclass(frozen=True)
class AppState:
    """The server's state, shared by every call in the process."""

    settings: Settings
    upstream: UpstreamClient
    fairshare: FairShare
    """Each call's limits, slot, metrics and audit record."""
    identity: IdentityVerifier
    """Who calls: the clients (reloaded on SIGHUP) and, over HTTP, the SDK's token verifier. Read the
    caller with `gguf_mcp.access.current_caller`."""

    def deployment(self, name: str | None) -> Deployment:
        """The deployment a call named (None: the default); `UnknownDeployment` if there is none such."""
        return find_deployment(self.settings, name)


def find_deployment(settings: Settings, name: str | None) -> Deployment:
    """The deployment named `name` (None: the default); `UnknownDeployment` if there is none such."""
    deployments = settings.deployments
    if name is None:
        return deployments[settings.default_deployment]
    try:
        return deployments[name]
    except KeyError:
        raise UnknownDeployment(name, deployments) from None


def open_state(settings: Settings, *, metrics: bool) -> tuple[Pool, AppState]:
    """The process's state, and the pooled HTTP client under it (the caller enters and closes it).

    `metrics`: collect them (HTTP serves `/metrics`; stdio has nowhere to show them). Raises
    `ConfigError` before anything runs: a proxy it cannot use, an audit log it cannot append to, a
    PROMETHEUS_MULTIPROC_DIR it cannot write.
    Close with `state.fairshare.close()` when the process is done serving.
    """
    observer = None
    if metrics:
        from gguf_mcp.fairshare.metrics import Metrics  # prometheus_client: only where /metrics shows it

        observer = Metrics()
    from gguf_mcp.identity import identity_for  # the SDK's auth modules: only a server opens a state

    http, upstream = upstream_client(settings, observer)
    audit = AuditLog.open(settings.audit_log) if settings.audit_log is not None else None
    fairshare = FairShare.for_settings(settings, upstream, metrics=observer, audit=audit)
    return http, AppState(settings, upstream, fairshare=fairshare, identity=identity_for(settings))
