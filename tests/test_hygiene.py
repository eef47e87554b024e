"""Resource hygiene: many calls, and many calls cancelled mid-flight, leave gguf-mcp's memory and
open descriptors (upstream connections included) where they were.

A bounded version of benchmarks/soak.py (10,000 calls), with generous bounds: a leak of a few
kilobytes or one socket per call still fails them. Numbers come from /proc of the server process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.bridge import Bridge, Transport
from tests.support.gateway import ACCOUNT_KEY, Gateway
from tests.support.proc import gguf_mcp_child, usage
from tests.support.soak import cancellation_churn, sequential_calls

CALLS = 1000
CANCELLATIONS = 200
WARMUP = 100
MiB_IN_KiB = 1024


@pytest.fixture
def env(gateway: Gateway) -> dict[str, str]:
    gateway.add_canned_deployment("dep")
    return {"GGUF_BASE_URL": gateway.base_url_for("dep"), "MODELSLAB_API_KEY": ACCOUNT_KEY}


async def test_a_thousand_calls_keep_memory_and_descriptors_flat(env: dict[str, str], tmp_path: Path) -> None:
    async with Bridge("stdio", tmp_path).connect(env) as client:
        pid = gguf_mcp_child()
        assert await sequential_calls(client, WARMUP) == 0
        before = usage(pid)
        failed = await sequential_calls(client, CALLS)
        after = usage(pid)
    print(f"\n{CALLS} calls: before {before}; after {after}")
    assert failed == 0
    assert after.fds <= before.fds + 2, f"descriptors leak: {before} -> {after}"
    assert after.sockets <= before.sockets + 1
    assert after.rss_kib - before.rss_kib < 12 * MiB_IN_KiB, f"memory grows: {before} -> {after}"


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_cancelled_calls_leave_nothing_behind(
    gateway: Gateway, env: dict[str, str], tmp_path: Path, transport: Transport
) -> None:
    async with Bridge(transport, tmp_path).connect(env) as client:
        pid = gguf_mcp_child()
        await sequential_calls(client, WARMUP)
        await cancellation_churn(client, gateway, 20)  # warm the cancellation paths too
        before = usage(pid)
        await cancellation_churn(client, gateway, CANCELLATIONS)
        after = usage(pid)
        still_fine = await sequential_calls(client, 7)
    print(f"\n{CANCELLATIONS} cancelled calls ({transport}): before {before}; after {after}")
    assert still_fine == 0, "the session serves calls after the churn"
    assert gateway.pending_faults("dep") == 0
    assert after.fds <= before.fds + 2, f"descriptors leak: {before} -> {after}"
    assert after.sockets <= before.sockets + 1
    assert after.rss_kib - before.rss_kib < 12 * MiB_IN_KiB, f"memory grows: {before} -> {after}"
