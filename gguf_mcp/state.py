"""What every request is served with: the settings and the one upstream client.

The composition root (`gguf_mcp.cli`, or the HTTP app factory) builds one `AppState` per
process and hands it to `gguf_mcp.server.build_server`, whose lifespan gives it to every tool
call. Transports and entry points import this module, never the tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gguf_mcp.config import Deployment, Settings
from gguf_mcp.errors import UnknownDeployment
from gguf_mcp.upstream import UpstreamClient

if TYPE_CHECKING:  # the SDK's import costs a second; `gguf-mcp ask` builds a state without it
    from gguf_mcp.identity import IdentityVerifier


@dataclass(frozen=True)
class AppState:
    """The server's state, shared by every call in the process."""

    settings: Settings
    upstream: UpstreamClient
    identity: IdentityVerifier | None = None
    """Who calls: the clients (reloaded on SIGHUP) and, over HTTP, the SDK's token verifier. Set by
    the composition root of every MCP server; None (`gguf-mcp ask`) means the clients as loaded.
    Read the caller with `gguf_mcp.access.current_caller`."""

    def deployment(self, name: str | None) -> Deployment:
        """The deployment a call named (None: the default); `UnknownDeployment` if there is none such."""
        deployments = self.settings.deployments
        if name is None:
            return deployments[self.settings.default_deployment]
        try:
            return deployments[name]
        except KeyError:
            raise UnknownDeployment(name, deployments) from None
