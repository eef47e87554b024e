"""SIGHUP: the clients read again from GGUF_MCP_CONFIG and swapped in whole, without a restart.

`reload_on_sighup` runs for the app's lifetime in each process (`gguf-mcp --transport http`, or
each uvicorn worker: uvicorn's supervisor restarts its workers on SIGHUP, so signal the workers).
Until it runs, `hangups_ignored` keeps an early SIGHUP from killing the process (its default).
`reload_clients_of` builds a new directory and assigns it in one statement (gguf_mcp.identity):
a removed client's next request gets 401, every other session and call in flight carries on.
A file that no longer loads keeps the clients loaded before, in one log line.
"""

from __future__ import annotations

import logging
import signal
import threading

import anyio

from gguf_mcp.config import reload_clients
from gguf_mcp.errors import ConfigError
from gguf_mcp.identity import directory_of
from gguf_mcp.logs import announce
from gguf_mcp.state import AppState

log = logging.getLogger(__name__)


def hangups_ignored() -> None:
    """Ignore SIGHUP until `reload_on_sighup` handles it: a worker still starting would die of it."""
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None and threading.current_thread() is threading.main_thread():
        signal.signal(hangup, signal.SIG_IGN)


async def reload_on_sighup(state: AppState) -> None:
    """Reload the clients on every SIGHUP until cancelled (signals reach the main thread's loop only)."""
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is None or threading.current_thread() is not threading.main_thread():
        return
    with anyio.open_signal_receiver(hangup) as signals:
        async for _ in signals:
            reload_clients_of(state)


def reload_clients_of(state: AppState) -> None:
    """Read the clients again and swap them in, or keep the current ones and say why (one line)."""
    identity = state.identity
    before = identity.directory.clients
    try:
        fresh = reload_clients(state.settings)
    except ConfigError as error:
        log.error("SIGHUP: the clients were not reloaded, the %d loaded before stay: %s", len(before), error)
        return
    identity.directory = directory_of(fresh)
    after = fresh.clients
    announce(
        log,
        "SIGHUP: clients read again: %d (removed: %s; added: %s; changed: %s)",
        len(after),
        _listed(set(before) - set(after)),
        _listed(set(after) - set(before)),
        _listed({name for name in set(before) & set(after) if before[name] != after[name]}),
    )
    if fresh.auth_required and not state.settings.auth_required:
        log.error("SIGHUP: this server started without client credentials; restart it to require the new ones")


def _listed(names: set[str]) -> str:
    return ", ".join(sorted(names)) or "none"
