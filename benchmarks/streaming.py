"""Latencies of the streaming path, over stdio and Streamable HTTP, medians over many runs.

- first token -> first progress: from the moment the gateway emulator relays the deployment's
  first SSE event to the moment the official MCP client's progress callback runs;
- cancel -> upstream disconnect: from the client cancelling a call mid-stream to the gateway
  seeing gguf-mcp close the upstream request (which is what stops llama.cpp generating);
- cancel -> llama.cpp idle: the same cancel, until llama.cpp's /slots shows no slot busy.

All clocks are CLOCK_MONOTONIC on one machine, so times taken in different processes compare.

    .venv/bin/python -m benchmarks.streaming [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from tests.support.bridge import Bridge
from tests.support.gateway import ACCOUNT_KEY, Fault, Gateway, running_gateway
from tests.support.llama import LlamaServer, running_llama_server
from tests.support.tiny_model import write_tiny_model

USER = [{"role": "user", "content": "Hello there"}]


class TimedRelay(Fault):
    """Relay the stream, noting when the first event went out; optionally hold after `hold_after`."""

    def __init__(self, marks: dict[str, float], hold_after: int | None = None) -> None:
        self.marks, self.hold_after = marks, hold_after

    async def answer(self, exchange: Any) -> None:
        async with exchange.open_upstream() as reply:
            await exchange.start(reply.status, reply.headers)
            sent = 0
            async for event in exchange.sse_events(reply):
                await exchange.write(event)
                sent += 1
                if sent == 1:
                    self.marks["first_event"] = time.monotonic()
                if sent == self.hold_after:
                    await anyio.sleep(3600)
            await exchange.finish()


async def one_transport(
    transport: str, gw: Gateway, llama: LlamaServer, runs: int, workdir: Path
) -> dict[str, list[float]]:
    bridge = Bridge(transport, workdir)  # type: ignore[arg-type]
    env = {"GGUF_BASE_URL": gw.base_url_for("dep"), "MODELSLAB_API_KEY": ACCOUNT_KEY}
    out: dict[str, list[float]] = {"first_progress": [], "cancel_disconnect": [], "cancel_idle": []}
    async with bridge.connect(env) as client:
        await client.call_tool("chat", {"messages": USER, "max_tokens": 2})  # warm
        for _ in range(runs):
            # first token -> first progress
            marks: dict[str, float] = {}
            gw.inject("dep", TimedRelay(marks))

            async def on_progress(
                progress: float, total: float | None, message: str | None, marks: dict[str, float] = marks
            ) -> None:
                marks.setdefault("first_progress", time.monotonic())

            await client.call_tool("chat", {"messages": USER, "max_tokens": 16}, progress_callback=on_progress)
            out["first_progress"].append((marks["first_progress"] - marks["first_event"]) * 1000)

            # cancel -> upstream disconnect (stream held open and idle after 3 events)
            for hold_after, key in ((3, "cancel_disconnect"), (None, "cancel_idle")):
                gw.clear()
                marks = {}
                gw.inject("dep", TimedRelay(marks, hold_after))
                seen = anyio.Event()

                async def first(
                    progress: float, total: float | None, message: str | None, seen: anyio.Event = seen
                ) -> None:
                    seen.set()

                async with anyio.create_task_group() as tg:
                    scope = anyio.CancelScope()

                    async def call(scope: anyio.CancelScope = scope, cb: Any = first) -> None:
                        with scope:
                            await client.call_tool("chat", {"messages": USER, "max_tokens": 2000}, progress_callback=cb)

                    tg.start_soon(call)
                    await seen.wait()
                    cancelled_at = time.monotonic()
                    scope.cancel()
                if key == "cancel_disconnect":
                    (disconnect,) = await anyio.to_thread.run_sync(lambda: gw.wait_for_disconnects(1, 10))
                    out[key].append((disconnect.at - cancelled_at) * 1000)
                else:
                    while not await anyio.to_thread.run_sync(llama.is_idle):
                        pass
                    out[key].append((time.monotonic() - cancelled_at) * 1000)
    return out


def row(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"| {name} | {statistics.median(values):.1f} | {p90:.1f} | {max(values):.1f} | {len(values)} |"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = write_tiny_model(workdir / "tiny.gguf")
        with running_llama_server(model, "bench-key") as llama, running_gateway() as gw:
            gw.add_deployment("dep", llama.url, llama.api_key)
            results = {t: await one_transport(t, gw, llama, options.runs, workdir) for t in ("stdio", "http")}
    print(
        f"gguf-mcp streaming latencies, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
        f"llama.cpp ({llama.kind}) behind the gateway emulator\n"
    )
    print("| measure | median ms | p90 ms | max ms | runs |")
    print("|---|---|---|---|---|")
    for transport, result in results.items():
        print(row(f"{transport}: first upstream token -> first progress notification", result["first_progress"]))
        print(row(f"{transport}: cancel -> upstream request closed", result["cancel_disconnect"]))
        print(row(f"{transport}: cancel -> llama.cpp idle (/slots)", result["cancel_idle"]))


if __name__ == "__main__":
    anyio.run(main)
