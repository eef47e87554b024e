"""Logging: stderr only, quiet by default, secrets redacted, as text or one JSON object per line.

Stdout is the stdio transport's wire, so nothing logs there. Every record passes the redacting
filter before any formatter sees it, whichever format is chosen. Two context variables ride along
with a request: its id (set per HTTP request by `gguf_mcp.http`, in JSON lines) and its client
(`client_name`: the caller's table name or OAuth client_id, never a token; set by
`gguf_mcp.access` for every MCP request and by `gguf_mcp.http` once a bearer is verified), which
every line of the request names, in both formats.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from contextvars import ContextVar
from datetime import datetime, timezone

from gguf_mcp.bodies import cut, plain
from gguf_mcp.config import Settings
from gguf_mcp.redaction import Redactor

request_id: ContextVar[str | None] = ContextVar("gguf_mcp_request_id", default=None)
"""The id of the HTTP request being served (None outside one); echoed as `X-Request-Id`."""
client_name: ContextVar[str | None] = ContextVar("gguf_mcp_client", default=None)
"""Who makes the request being served: a client's table name or an OAuth client_id (None outside one)."""

MAX_CLIENT_NAME = 100
"""An OAuth client_id is the authorization server's to choose (a URL, with Client ID Metadata Documents)."""

# uvicorn installs its own handlers on these (its CLI does, and so does `uvicorn.Config` unless
# told not to); they must go through ours instead, or they would skip redaction and the format.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


class RedactingFilter(logging.Filter):
    """Last line of defence: no log record leaves with a secret value in it."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self._redactor = Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._redactor.text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if self._redactor.text(text) != text:
                record.exc_info, record.exc_text = None, None
                record.msg = f"{record.msg} [traceback withheld: it contained a secret]"
        return True


def shown_client() -> str | None:
    """The request's client as a log line shows it: one line, control characters removed, bounded."""
    name = client_name.get()
    return None if name is None else cut(plain(name), MAX_CLIENT_NAME)


class TextFormatter(logging.Formatter):
    """`time level logger: message`, with `[client NAME]` before the message inside a request."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        name = shown_client()
        tag = "" if name is None else f"[client {name}] "
        return f"{record.asctime} {record.levelname} {record.name}: {tag}{record.message}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, pid, request_id, client,
    exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which worker, when several serve one port
        }
        rid = request_id.get()
        if rid is not None:
            line["request_id"] = rid
        name = shown_client()
        if name is not None:
            line["client"] = name
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    """Route every log record (ours, the SDK's, uvicorn's) through one redacting stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(RedactingFilter(settings.secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    debugging = root.level <= logging.DEBUG
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    # One line per request (uvicorn's access log): only when debugging.
    logging.getLogger("uvicorn.access").setLevel(logging.DEBUG if debugging else logging.WARNING)


def announce(log: logging.Logger, message: str, *args: object) -> None:
    """An INFO record that also shows at the default level (warning): a start, a stop, a reload are
    worth one line.

    `Logger.handle` skips the level check but not the handlers' redaction and format; at `error`
    the operator asked for quiet.
    """
    if logging.getLogger().getEffectiveLevel() <= logging.WARNING:
        log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, message, args, None))
