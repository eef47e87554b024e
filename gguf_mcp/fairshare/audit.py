"""The audit trail: one JSON object per finished call, appended to `GGUF_MCP_AUDIT_LOG` (a file,
or `-` for stderr). Who called which deployment and tool, how many tokens, how long it waited and
took, and how it ended; never a prompt, an output, a key or a token.

Each record is one `os.write` of the whole line (a few hundred bytes: every field is bounded) to
a descriptor opened with `O_APPEND`: the kernel places it at the end of the file whoever else
appends (threads, worker processes), so lines never interleave, and no buffer holds half a line
for a crash to lose. What no user-space code can prevent: a process killed (SIGKILL, the OOM
killer) inside that one write, where the line crosses a page of the file, may leave the line's
first part only. So a log is opened by ending such a torn last line: the next record starts on a
line of its own, and a reader loses that one record at most (its line is not JSON).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone

from gguf_mcp.errors import audit_log_unwritable

log = logging.getLogger(__name__)

STDERR = "-"
MAX_FIELD = 128
"""The longest request id or client name written (a client chooses its request ids, and an OAuth
client_id is the authorization server's): a record stays one short line."""


@dataclass(frozen=True)
class AuditRecord:
    time: str
    """When the call ended, RFC 3339 in UTC with milliseconds."""
    request_id: str | None
    client: str
    deployment: str
    tool: str
    input_tokens: int | None
    output_tokens: int | None
    queue_ms: float
    duration_ms: float
    outcome: str
    """`ok`, `cancelled`, `deadline`, or the error's label."""

    @staticmethod
    def now() -> str:
        return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def line(self) -> bytes:
        record = dict(vars(self))  # asdict() deep-copies: a third of the record's cost
        if self.request_id is not None:
            record["request_id"] = self.request_id[:MAX_FIELD]
        record["client"] = self.client[:MAX_FIELD]
        # ensure_ascii: whatever a name holds, the record is one line of ASCII.
        return (json.dumps(record, separators=(",", ":"), ensure_ascii=True) + "\n").encode()


class AuditLog:
    """An open audit trail; `open(target)` raises `ConfigError` (one line) if it cannot be appended to."""

    def __init__(self, fd: int, *, owned: bool) -> None:
        self._fd = fd
        self._owned = owned
        self._failing = False

    @classmethod
    def open(cls, target: str) -> AuditLog:
        if target == STDERR:
            return cls(2, owned=False)
        try:
            fd = os.open(target, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise audit_log_unwritable(target, exc.strerror or type(exc).__name__) from None
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                os.write(fd, b"\n")  # a record torn by a kill ends here (see the module docstring)
        except OSError as exc:
            os.close(fd)
            raise audit_log_unwritable(target, exc.strerror or type(exc).__name__) from None
        return cls(fd, owned=True)

    def write(self, record: AuditRecord) -> None:
        """Append one record. A failed write (disk full) is logged once per failing spell; the call stands."""
        line = record.line()
        try:
            written = os.write(self._fd, line)
            if written < len(line):  # only when the disk fills or a signal interrupts: finish the line
                os.write(self._fd, line[written:])
        except OSError as exc:
            if not self._failing:
                log.warning("Could not append to the audit log (%s); calls go on unrecorded until it works", exc)
            self._failing = True
            return
        self._failing = False

    def close(self) -> None:
        if self._owned:
            os.close(self._fd)
            self._owned = False
