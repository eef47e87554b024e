"""Run gguf-mcp (`python -m gguf_mcp ARGS`) with its garbage-collector pauses timed, optionally after `gc.freeze()`.

A diagnostic for the scale benchmark (`benchmarks/scale.py --gc-probe [--gc-freeze]`), not a way
to run gguf-mcp: it times every collection through `gc.callbacks` and, at exit, prints one line
to stderr, `GC-PAUSES {json}` (count, total and longest pause per generation, in ms). With
`--threshold A,B,C` it sets `gc.set_threshold(A, B, C)` (Python's default is 700,10,10). With
`--freeze` it first imports what serving imports (the SDK, gguf-mcp's HTTP app) and moves every
object alive then into the permanent generation (`gc.freeze()`), so that later full collections
no longer walk the SDK's import-time objects: the change this measures before it is proposed.

    .venv/bin/python -m benchmarks.gc_probe [--freeze] [--module M] [--threshold 700,10,10] -- ARGS...
"""

from __future__ import annotations

import atexit
import gc
import json
import runpy
import signal
import sys
import time
from typing import Any

pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
_started = [0.0]


def _timer(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        pauses[int(info["generation"])].append((time.perf_counter() - _started[0]) * 1000)


def _report() -> None:
    summary = {
        f"gen{generation}": {
            "count": len(found),
            "total_ms": round(sum(found), 1),
            "max_ms": round(max(found, default=0.0), 1),
            "over_10ms": sum(1 for p in found if p > 10),
        }
        for generation, found in pauses.items()
    }
    summary["frozen"] = gc.get_freeze_count()  # type: ignore[assignment]
    print(f"GC-PAUSES {json.dumps(summary)}", file=sys.stderr, flush=True)


def _on_term(signum: int, frame: object) -> None:
    sys.exit(0)  # through atexit, hence _report


def main() -> None:
    args = sys.argv[1:]
    freeze = bool(args) and args[0] == "--freeze"
    if freeze:
        args = args[1:]
    module = "gguf_mcp"
    if args[:1] == ["--module"]:  # e.g. benchmarks.floor_server, to compare with the SDK's floor
        module, args = args[1], args[2:]
    if args[:1] == ["--threshold"]:
        gc.set_threshold(*(int(n) for n in args[1].split(",")))
        args = args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if freeze:
        if module == "gguf_mcp":
            import gguf_mcp.http
            import gguf_mcp.server  # noqa: F401
        else:
            import mcp.server.mcpserver  # noqa: F401
        gc.collect()
        gc.freeze()
    gc.callbacks.append(_timer)
    atexit.register(_report)
    # uvicorn re-raises SIGTERM once it has shut down, with the handler it found: this one.
    signal.signal(signal.SIGTERM, _on_term)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
