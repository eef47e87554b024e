"""The audit trail: one JSON line per finished call, whole lines whatever else appends or crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from gguf_mcp.errors import ConfigError
from gguf_mcp.fairshare.audit import MAX_FIELD, AuditLog, AuditRecord
from tests.support.bridge import base_env


def record(n: int = 0, client: str = "team-a", request_id: str | None = "7") -> AuditRecord:
    return AuditRecord(
        time=AuditRecord.now(),
        request_id=request_id,
        client=client,
        deployment="dep",
        tool="chat",
        input_tokens=12,
        output_tokens=n,
        queue_ms=1.5,
        duration_ms=250.0,
        outcome="ok",
    )


def test_a_record_is_one_line_with_the_promised_fields(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog.open(str(path))
    log.write(record(30, client="line\nbreak\u2028", request_id="r" * 1000))
    log.close()
    (line,) = path.read_bytes().splitlines()
    parsed = json.loads(line)
    assert list(parsed) == [
        "time", "request_id", "client", "deployment", "tool",
        "input_tokens", "output_tokens", "queue_ms", "duration_ms", "outcome",
    ]  # fmt: skip
    assert parsed["client"] == "line\nbreak\u2028" and parsed["output_tokens"] == 30
    assert len(parsed["request_id"]) == MAX_FIELD
    assert parsed["time"].endswith("Z") and "T" in parsed["time"]
    assert line.isascii()
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_an_existing_trail_is_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"earlier": true}\n')
    log = AuditLog.open(str(path))
    log.write(record())
    log.close()
    assert [json.loads(line).get("earlier") for line in path.read_text().splitlines()] == [True, None]


def test_a_trail_that_cannot_be_opened_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        AuditLog.open(str(tmp_path / "no-such-dir" / "audit.jsonl"))
    message = str(error.value)
    assert message.startswith("GGUF_MCP_AUDIT_LOG=") and "No such file or directory" in message
    assert "\n" not in message


def test_dash_writes_to_stderr() -> None:
    script = textwrap.dedent(
        """
        from gguf_mcp.fairshare.audit import AuditLog, AuditRecord
        AuditLog.open("-").write(AuditRecord("t", None, "c", "d", "embed", 1, None, 0.0, 1.0, "ok"))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], env=base_env(), capture_output=True, text=True, timeout=30)
    assert done.stdout == ""
    assert json.loads(done.stderr)["tool"] == "embed"


def test_threads_appending_at_once_never_mix_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog.open(str(path))
    big = "x" * 3000  # records past a stdio buffer's flush size would split if written in pieces

    def writer(name: str) -> None:
        for n in range(300):
            log.write(record(n, client=f"{name}-{big}"))

    threads = [threading.Thread(target=writer, args=(f"t{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 1800
    for i in range(6):
        assert sorted(r["output_tokens"] for r in lines if r["client"].startswith(f"t{i}-")) == list(range(300))


WRITER = textwrap.dedent(
    """
    import sys
    from gguf_mcp.fairshare.audit import AuditLog, AuditRecord
    log = AuditLog.open(sys.argv[1])
    name = sys.argv[2] + "-" + "y" * 60  # a configured client name's length: records as long as real ones
    n = 0
    while True:
        log.write(AuditRecord("t", str(n), name, "dep", "chat", 1, n, 0.0, 1.0, "ok"))
        if n == 0:
            print("writing", flush=True)  # after its first record: each writer has one before the kill
        n += 1
    """
)


def test_writers_killed_mid_stream_leave_whole_lines_and_the_next_start_a_fresh_one(tmp_path: Path) -> None:
    """Two processes append as fast as they can and are killed (SIGKILL) in the middle. Lines never
    interleave: every line is a whole record but at most one per killed writer (a kill inside the
    one write can keep its first part, which no user-space code prevents), each writer's records are
    in order, and the next process to open the log starts on a line of its own."""
    path = tmp_path / "audit.jsonl"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), name], env=base_env(), stdout=subprocess.PIPE)
        for name in ("p1", "p2")
    ]
    for w in writers:
        assert w.stdout is not None and w.stdout.readline() == b"writing\n"
    while path.stat().st_size < 2_000_000:  # until both have written plenty
        pass
    for w in writers:
        w.send_signal(signal.SIGKILL)
        w.wait(timeout=30)
        assert w.stdout is not None
        w.stdout.close()
    after = AuditLog.open(str(path))
    after.write(AuditRecord("t", "last", "p3", "dep", "chat", 1, 0, 0.0, 1.0, "ok"))
    after.close()
    lines = path.read_bytes().splitlines()
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            continue
    assert len(lines) - len(parsed) <= 2, "at most one torn line per killed writer"
    assert parsed[-1]["request_id"] == "last" and len(parsed) > 1000
    for name in ("p1", "p2"):
        mine = [r["output_tokens"] for r in parsed if r["client"].startswith(f"{name}-")]
        assert mine and mine == sorted(set(mine)) and mine[-1] - len(mine) <= 1, name


def test_opening_a_log_whose_last_record_was_torn_ends_that_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"time":"t","request_id":"0"}\n{"time":"t","requ')
    log = AuditLog.open(str(path))
    log.write(AuditRecord("t", "1", "a", "dep", "chat", 1, 2, 0.0, 1.0, "ok"))
    log.close()
    *_, torn, last = path.read_bytes().splitlines()
    assert torn == b'{"time":"t","requ'
    assert json.loads(last)["request_id"] == "1"
