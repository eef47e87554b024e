"""Soak: 10,000 sequential calls, then cancellation churn, through one gguf-mcp process; prints the
server's resident memory and open descriptors before, during and after.

The upstream is the gateway emulator's canned deployment (llama-server's exact answers, at once),
so what is measured is the bridge. The calls cycle through every tool, plain and streamed; the
churn holds each call at the gateway before its first byte and cancels it once it has arrived.
tests/test_hygiene.py runs a bounded version of the same load in the suite.

    .venv/bin/python -m benchmarks.soak [--calls 10000] [--churn 300] [--transport stdio|http]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import anyio

from tests.support.bridge import Bridge
from tests.support.gateway import ACCOUNT_KEY, running_gateway
from tests.support.proc import Usage, gguf_mcp_child, usage
from tests.support.soak import cancellation_churn, sequential_calls

WARMUP = 200
REPORT_EVERY = 1000


def line(label: str, reading: Usage, extra: str = "") -> None:
    print(f"{label:<28} {reading}{extra}", flush=True)


async def soak(calls: int, churn: int, transport: str) -> dict[str, object]:
    with running_gateway() as gateway, tempfile.TemporaryDirectory() as workdir:
        gateway.add_canned_deployment("dep")
        env = {"GGUF_BASE_URL": gateway.base_url_for("dep"), "MODELSLAB_API_KEY": ACCOUNT_KEY}
        async with Bridge(transport, Path(workdir)).connect(env) as client:  # type: ignore[arg-type]
            pid = gguf_mcp_child()
            line("started", usage(pid))
            failed = await sequential_calls(client, WARMUP)
            before = usage(pid)
            line(f"after {WARMUP} warm-up calls", before)
            started = time.monotonic()
            done = 0
            while done < calls:
                batch = min(REPORT_EVERY, calls - done)
                failed += await sequential_calls(client, batch)
                done += batch
                line(f"after {done} calls", usage(pid), f", {done / (time.monotonic() - started):.0f} calls/s")
            after_calls = usage(pid)
            churn_started = time.monotonic()
            await cancellation_churn(client, gateway, churn)
            churn_seconds = time.monotonic() - churn_started
            after_churn = usage(pid)
            line(f"after {churn} cancelled calls", after_churn, f", {churn_seconds:.1f} s")
            failed += await sequential_calls(client, 7)
    return {
        "transport": transport,
        "calls": calls,
        "failed": failed,
        "seconds": round(churn_started - started, 1),
        "before": vars(before),
        "after_calls": vars(after_calls),
        "cancelled": churn,
        "after_churn": vars(after_churn),
        "rss_growth_kib": {
            "calls": after_calls.rss_kib - before.rss_kib,
            "churn": after_churn.rss_kib - after_calls.rss_kib,
        },
        "fd_growth": {"calls": after_calls.fds - before.fds, "churn": after_churn.fds - after_calls.fds},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--churn", type=int, default=300)
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    args = parser.parse_args()
    summary = anyio.run(soak, args.calls, args.churn, args.transport)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
