"""Label values of the metrics, bounded whoever calls: configured names, or a fixed word.

Apart from `metrics` so that a process without metrics (stdio) never imports prometheus_client.
"""

from __future__ import annotations

from typing import get_args

from gguf_mcp.clients import Caller
from gguf_mcp.errors import TransportFailure

OAUTH_CLIENT = "oauth"
"""The client label of every OAuth client that no `[clients.*]` table names (its id is unbounded)."""
_FAILURES = frozenset(get_args(TransportFailure))


def client_label(caller: Caller) -> str:
    return caller.name if caller.configured else OAUTH_CLIENT


def status_label(status: int | str) -> str:
    """An HTTP status as its number, a transport failure as its kind; anything else `other`."""
    if isinstance(status, int):
        return str(status) if 100 <= status <= 599 else "other"
    return status if status in _FAILURES else "other"
