"""A fair share of each deployment, and an account of who used it.

- `share`: `FairShare.call(...)`, one call's way through everything below (the entry point);
- `limits`: a client's own limits (calls in flight, max_tokens, tokens per hour and per day);
- `queue`, `order`, `slots`: each deployment's slots, taken by clients in turn;
- `metrics`: Prometheus metrics and `/metrics`'s exposition (`labels`: their bounded label values);
- `audit`: one JSON line per finished call (`GGUF_MCP_AUDIT_LOG`);
- `tracing`: the GenAI usage attributes on the SDK's tool-call span.

Knows clients (`gguf_mcp.clients`) and deployments, not MCP nor HTTP: the tools call in, the HTTP
app serves `Metrics.render()`.
"""

from typing import TYPE_CHECKING

from gguf_mcp.fairshare.audit import AuditLog, AuditRecord
from gguf_mcp.fairshare.limits import Admission, ClientLimits
from gguf_mcp.fairshare.queue import FairQueue
from gguf_mcp.fairshare.share import Call, FairShare, waiting_message
from gguf_mcp.fairshare.tracing import annotate_span

if TYPE_CHECKING:
    from gguf_mcp.fairshare.metrics import Metrics


def __getattr__(name: str) -> object:
    # prometheus_client costs ~10 ms of start-up: only a process that collects metrics (HTTP) imports it.
    if name == "Metrics":
        from gguf_mcp.fairshare.metrics import Metrics

        return Metrics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Admission",
    "AuditLog",
    "AuditRecord",
    "Call",
    "ClientLimits",
    "FairQueue",
    "FairShare",
    "Metrics",
    "annotate_span",
    "waiting_message",
]
