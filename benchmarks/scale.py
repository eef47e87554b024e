"""How cost grows with the number of generations in flight: C concurrent streamed calls through one HTTP server.

For each system and each C (`--levels`, default 10 100 500 1000 2000), on loopback only:

1. a fresh server: gguf-mcp (`python -m gguf_mcp --transport http`, stateful or stateless) in
   front of the emulated remote deployment (`benchmarks/emulator.py`: first token after
   `--ttft`, then one every `--interval`, each stamped with its send time), or the floor, a bare
   `MCPServer` whose tools emit the same progress from an in-process generator
   (`benchmarks/floor_server.py`), which is what the SDK costs with no upstream at all;
2. the load, in its own process (`benchmarks/loadgen.py`): C sessions, each calling `chat` and
   `messages` in turn with a progress token for `--window` seconds (first calls spread over one
   call's duration), reading every SSE stream to its end and checking each result against the
   tokens its progress carried;
3. beside it, in this process, one official `mcp` client session making the same calls (progress
   received, result correct), and a probe of `/healthz` every 100 ms (its latency is the server's
   event-loop lag plus a fraction of a millisecond), and readings of every process from /proc.

Per run: server RSS (before the load, at steady state; KiB per in-flight call; the slope over
the levels), server CPU per forwarded token and per progress notification, token lag
(the emulator's send stamp -> the client's receipt of the progress notification) for every
token and for the newest token of each notification (gguf-mcp sends the text gathered at most
every 0.1 s, so a token can wait for its notification up to 0.1 s by design), time to first
progress, `/healthz` latency, errors, the emulator's view (streams read to their end, cut,
resent, peak concurrent streams), and every process's CPU. A run holds when nothing failed,
every upstream stream was read to its end, none was resent, and the newest-token p99 lag is
under `--holds-ms`.

Output: a markdown table on stdout, the raw numbers as JSON (`--json`) and a plot (`--png`).
`--profile C` also records gguf-mcp (stateful) at C with py-spy and prints where its CPU goes.

    .venv/bin/python -m benchmarks.scale                  # 4 systems x 5 levels, ~10 min on 2 cores
    .venv/bin/python -m benchmarks.scale --quick          # ~75 s: C = 10 100 500, gguf-stateful + its floor
    # what benchmarks/results/ holds (~12 min; the 5th system is two stateless uvicorn workers):
    .venv/bin/python -m benchmarks.scale --systems gguf-stateful gguf-stateless floor-stateful floor-stateless \
        gguf-stateless-w2 --json benchmarks/results/scale.json --png benchmarks/results/scale.png
    .venv/bin/python -m benchmarks.scale --ref main       # gguf-mcp as of a git ref, on this venv
    .venv/bin/python -m benchmarks.scale --gguf-python /work/main/.venv/bin/python   # another install
    .venv/bin/python -m benchmarks.scale --systems gguf-stateful --levels 100 --profile 100
    .venv/bin/python -m benchmarks.scale --systems gguf-stateful floor-stateful --levels 100 500 --gc-probe
    .venv/bin/python -m benchmarks.scale --server-path DIR   # DIR from `pip install --target DIR uvloop httptools`

gguf-mcp gets generous caps through the settings it may have (GGUF_MCP_MAX_SESSIONS, ..._MAX_CONNECTIONS,
..._UPSTREAM_CONNECTIONS, ..._SESSION_IDLE_TIMEOUT; older versions ignore them), and every process
inherits this one's open-file limit, raised to its hard limit. Needs the `bench` extra for the plot
(`pip install -e '.[test,bench]'`) and py-spy for `--profile`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx

from benchmarks.common import (
    ROOT,
    listening,
    module_argv,
    pct,
    raise_fd_limit,
    source_of,
    tree_cpu_seconds,
    tree_rss_kib,
)
from benchmarks.loadgen import STAMP, Connection
from tests.support.bridge import connect_http, free_port

SYSTEMS = ("gguf-stateful", "gguf-stateless", "floor-stateful", "floor-stateless", "gguf-stateless-w2")
DEFAULT_SYSTEMS = SYSTEMS[:4]
LEVELS = (10, 100, 500, 1000, 2000)
# Generous caps, so that settings the server may gain do not limit the benchmark (ignored today).
CAPS = {
    "GGUF_MCP_MAX_SESSIONS": "100000",
    "GGUF_MCP_MAX_CONNECTIONS": "10000",  # at most 65535, and below the open-file limit
    "GGUF_MCP_UPSTREAM_CONNECTIONS": "5000",
    "GGUF_MCP_SESSION_IDLE_TIMEOUT": "3600",
}
PY_SPY = Path(sys.executable).with_name("py-spy")


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


# --- Processes -----------------------------------------------------------------------------------


def gguf_command(system: str, port: int, options: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """gguf-mcp's argv and environment: this checkout, a git ref, or another interpreter's install."""
    python = options.gguf_python or sys.executable
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), "PYTHONSAFEPATH": "1", **CAPS}
    paths = [options.server_path] if options.server_path else []
    if options.ref or not options.gguf_python:
        paths.append(str(source_of(options.ref)))
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env["GGUF_BASE_URL"] = options.emulator_url
    env.update(setting.split("=", 1) for setting in options.gguf_env)
    env["GGUF_MCP_STATELESS"] = "true" if "stateless" in system else "false"
    if system.endswith("-w2"):
        argv = [python, "-m", "uvicorn", "--factory", "gguf_mcp.http:create_app", "--port", str(port)]
        return [*argv, "--workers", "2", "--log-level", "warning", "--no-access-log"], env
    serve = ["--transport", "http", "--port", str(port)]
    if gc_probing(options):  # by path: nothing of this checkout's on the server's sys.path
        return [python, *gc_probe_args(options, "gguf_mcp"), *serve], env
    return [python, "-m", "gguf_mcp", *serve], env


def gc_probing(options: argparse.Namespace) -> bool:
    return bool(options.gc_probe or options.gc_freeze or options.gc_threshold)


def gc_probe_args(options: argparse.Namespace, module: str) -> list[str]:
    """`benchmarks/gc_probe.py` running `module`, as the options say."""
    args = [str(ROOT / "benchmarks" / "gc_probe.py"), *(["--freeze"] if options.gc_freeze else [])]
    args += ["--module", module, *(["--threshold", options.gc_threshold] if options.gc_threshold else [])]
    return [*args, "--"]


def floor_command(system: str, port: int, options: argparse.Namespace) -> list[str]:
    args = ["--port", str(port), "--ttft", str(options.ttft), "--interval", str(options.interval)]
    args += ["--stateless"] if "stateless" in system else []
    if gc_probing(options):
        return [sys.executable, *gc_probe_args(options, "benchmarks.floor_server"), *args]
    return module_argv("floor_server", *args)


@contextmanager
def running_server(system: str, options: argparse.Namespace, stderr: Path) -> Iterator[Server]:
    port = free_port()
    if system.startswith("gguf"):
        argv, env = gguf_command(system, port, options)
        cwd = tempfile.gettempdir()  # not this checkout: `-m` must find the gguf_mcp chosen above
    else:
        argv, env, cwd = floor_command(system, port, options), dict(os.environ), str(ROOT)
        env["PYTHONPATH"] = os.pathsep.join([*([options.server_path] if options.server_path else []), str(ROOT)])
    with stderr.open("ab") as err:
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=2) as http:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{system} exited with {process.returncode}: {stderr.read_text()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if http.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{system} did not answer /healthz in 60 s")
                time.sleep(0.05)  # polling a subprocess's port: there is no event to wait on
        yield Server(process, port)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(8)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- Beside the load: the official client, the /healthz probe, /proc readings ---------------------


async def official_calls(
    url: str, max_tokens: int, stop: anyio.Event, found: dict[str, Any], limit: int = 1 << 30
) -> None:
    """One official `mcp` client session making the load's calls in turn until `stop` (at most
    `limit` calls); checks each. Sets `found["finished"]` (an event) when it has ended."""
    found.update(calls=0, ok=0, notifications=0, lags=[], problems=[])
    finished = found.setdefault("finished", anyio.Event())
    async with connect_http(url, mode="legacy") as client:
        number = 0
        while not stop.is_set() and found["calls"] < limit:
            tool = ("chat", "messages")[number % 2]
            seen: list[bytes] = []

            async def on_progress(
                progress: float, total: float | None, message: str | None, seen: list[bytes] = seen
            ) -> None:
                now = time.monotonic()
                stamps = STAMP.findall((message or "").encode())
                found["notifications"] += 1
                seen += stamps
                found["lags"] += [now - float(s) for s in stamps]

            prompt = f"official {time.time_ns()}"
            arguments = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
            try:
                result = await client.call_tool(tool, arguments, progress_callback=on_progress)
            except Exception as exc:  # any failure is a finding, reported as such
                found["calls"] += 1
                found["problems"].append(f"{tool}: {type(exc).__name__}: {exc}"[:200])
                number += 1
                continue
            found["calls"] += 1  # counted once answered: a call cancelled at the end of the run is not one
            text = (result.structured_content or {}).get("text", "")
            expected = STAMP.findall(text.encode())
            if result.is_error:
                found["problems"].append(f"{tool}: tool error {str(result.content)[:150]}")
            elif len(expected) != max_tokens or expected != seen:
                found["problems"].append(f"{tool}: {len(seen)} progress tokens, {len(expected)} in the result")
            else:
                found["ok"] += 1
            number += 1
    finished.set()


async def _set_after(event: anyio.Event, seconds: float) -> None:
    await anyio.sleep(seconds)
    event.set()


async def probe_health(port: int, stop: anyio.Event, latencies: list[float]) -> None:
    """`GET /healthz` every 100 ms on one kept-alive connection; its latency, in seconds."""
    raw = f"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    conn: Connection | None = None
    while not stop.is_set():
        if conn is None or conn.transport is None:
            _, conn = await loop.create_connection(Connection, "127.0.0.1", port)
        started = time.monotonic()
        try:
            with anyio.fail_after(30):
                await conn.request(raw, None)
            latencies.append(time.monotonic() - started)
        except (OSError, TimeoutError):
            latencies.append(time.monotonic() - started)
            conn = None
        with anyio.move_on_after(0.1):
            await stop.wait()
    if conn is not None and conn.transport is not None:
        conn.transport.close()


async def sample_rss(pids: list[int], stop: anyio.Event, samples: list[tuple[float, int]]) -> None:
    while not stop.is_set():
        samples.append((time.monotonic(), tree_rss_kib(pids)))
        with anyio.move_on_after(0.25):
            await stop.wait()


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used (the first line of /proc/stat: all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


async def emulator_stats(http: httpx.AsyncClient, url: str, reset: bool = False) -> dict[str, Any]:
    if reset:
        await http.post(url + "/_reset")
    return dict((await http.get(url + "/_stats")).json())


# --- One run -------------------------------------------------------------------------------------


@asynccontextmanager
async def loadgen(
    url: str, sessions: int, stateless: bool, options: argparse.Namespace, out: Path
) -> AsyncIterator[anyio.abc.Process]:
    argv = module_argv(
        "loadgen",
        "--url", url,
        "--sessions", str(sessions),
        "--max-tokens", str(options.max_tokens),
        "--window", str(options.window),
        "--ramp", str(options.ttft + options.max_tokens * options.interval),
        "--drain", str(options.drain),
        "--out", str(out),
        *(["--stateless"] if stateless else []),
    )  # fmt: skip
    process = await anyio.open_process(argv, cwd=ROOT, stderr=None)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
        with anyio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()


async def read_line(process: anyio.abc.Process, seconds: float) -> str:
    assert process.stdout is not None
    buffer = b""
    with anyio.fail_after(seconds):
        while not buffer.endswith(b"\n"):
            chunk = await process.stdout.receive(1)
            buffer += chunk
    return buffer.decode().strip()


async def one_run(system: str, c: int, options: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    stateless = "stateless" in system
    run: dict[str, Any] = {"system": system, "c": c}
    log = workdir / f"{system}-{c}.stderr"
    async with AsyncExitStack() as stack:
        server = stack.enter_context(running_server(system, options, log))
        pids = [server.process.pid]
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        # Warm-up and proof: the official client's calls, before the load (the first upstream
        # request also loads gguf-mcp's HTTP client).
        warm: dict[str, Any] = {}
        with anyio.fail_after(60):
            await official_calls(server.url, 4, anyio.Event(), warm, limit=2)
        run["warmup_problems"] = warm["problems"]
        idle_rss = tree_rss_kib(pids)
        out = workdir / f"{system}-{c}.json"
        process = await stack.enter_async_context(loadgen(server.url, c, stateless, options, out))
        ready = await read_line(process, 300)
        _, connect_s, failed = ready.split()
        run["connect_s"], run["connect_failed"] = float(connect_s), int(failed)
        connected_rss = tree_rss_kib(pids)
        await emulator_stats(http, options.emulator_url, reset=True)
        emulator_pid = options.emulator_pid
        cpu0 = {
            "server": tree_cpu_seconds(pids),
            "emulator": tree_cpu_seconds([emulator_pid]),
            "bench": time.process_time(),
            "machine": machine_busy_seconds(),
        }
        stop = anyio.Event()
        beside: dict[str, Any] = {"finished": anyio.Event()}
        health: list[float] = []
        rss: list[tuple[float, int]] = []
        spy: subprocess.Popen[bytes] | None = None
        async with anyio.create_task_group() as tg:
            official = anyio.Event()  # the official client stops starting calls when the load does
            tg.start_soon(official_calls, server.url, options.max_tokens, official, beside)
            tg.start_soon(probe_health, server.port, stop, health)
            tg.start_soon(sample_rss, pids, stop, rss)
            go = time.monotonic()
            assert process.stdin is not None
            await process.stdin.send(b"GO\n")
            tg.start_soon(_set_after, official, options.window)
            if options.profile == c and system == "gguf-stateful":
                spy = start_profiler(server.process.pid, workdir / "profile.raw", options)
            done = await read_line(process, options.window + options.drain + 60)
            ended = time.monotonic()
            cpu = {
                "server": tree_cpu_seconds(pids) - cpu0["server"],
                "emulator": tree_cpu_seconds([emulator_pid]) - cpu0["emulator"],
                "bench": time.process_time() - cpu0["bench"],
            }
            # Everything else on the machine meanwhile (other tenants): the benchmark shares two cores.
            cpu["others"] = machine_busy_seconds() - cpu0["machine"] - sum(cpu.values())
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                await anyio.to_thread.run_sync(spy.wait, 60)
            official.set()
            stop.set()
            with anyio.move_on_after(30):
                await beside["finished"].wait()
            tg.cancel_scope.cancel()  # the official client's call if it is still running (counted as missing)
        wall = ended - go
        upstream = await emulator_stats(http, options.emulator_url) if system.startswith("gguf") else None
    load: dict[str, Any] = json.loads(out.read_text()) if done == "DONE" else {"failed": done}
    # The load's own reading: it has exited by now, so /proc no longer has it.
    cpu["loadgen"] = float(load.get("cpu_s", 0.0))
    cpu["others"] -= cpu["loadgen"]
    steady_from = go + options.ttft + options.max_tokens * options.interval + 1
    steady = [kib for t, kib in rss if steady_from <= t <= go + options.window]
    lags = beside["lags"]
    run |= {
        "wall_s": wall,
        "load": load,
        "cpu_s": cpu,
        "rss_kib": {
            "idle": idle_rss,
            "connected": connected_rss,
            "steady": statistics.median(steady) if steady else None,
            "peak": max((kib for _, kib in rss), default=None),
        },
        "health_ms": {
            "n": len(health),
            "p50": pct(health, 0.5) * 1000,
            "p99": pct(health, 0.99) * 1000,
            "max": max(health, default=float("nan")) * 1000,
        },
        "official": {
            "calls": beside["calls"],
            "ok": beside["ok"],
            "notifications": beside["notifications"],
            "problems": beside["problems"][:5],
            "token_lag_p50_ms": pct(lags, 0.5) * 1000,
            "token_lag_p99_ms": pct(lags, 0.99) * 1000,
        },
        "upstream": upstream,
        "log_tail": log.read_text(errors="replace")[-1500:] if log.exists() else "",
    }
    run["cores"] = {name: seconds / wall for name, seconds in cpu.items()}
    tokens = int(load.get("tokens") or 0)
    notifications = int(load.get("notifications") or 0)
    run["server_us_per_token"] = cpu["server"] * 1e6 / tokens if tokens else None
    run["server_us_per_notification"] = cpu["server"] * 1e6 / notifications if notifications else None
    gc_line = re.search(r"^GC-PAUSES (.*)$", log.read_text(errors="replace"), re.M) if log.exists() else None
    run["gc"] = json.loads(gc_line.group(1)) if gc_line else None
    run["holds"] = holds(run, options)
    return run


def holds(run: dict[str, Any], options: argparse.Namespace) -> bool:
    load, upstream = run["load"], run["upstream"]
    if "failed" in load or load["errors_total"] or load["abandoned"] or run["connect_failed"]:
        return False
    if run["official"]["problems"] or run["warmup_problems"]:
        return False
    if upstream is not None and (upstream["cut"] or upstream["resent"] or upstream["completed"] != upstream["streams"]):
        return False
    return bool(load["newest_token_lag"]["p99_ms"] < options.holds_ms)


# --- Profile -------------------------------------------------------------------------------------


def start_profiler(pid: int, raw: Path, options: argparse.Namespace) -> subprocess.Popen[bytes]:
    if not PY_SPY.exists():
        raise SystemExit(f"{PY_SPY} is missing: .venv/bin/pip install py-spy")
    argv = [str(PY_SPY), "record", "-p", str(pid), "-r", "250", "-f", "raw", "-o", str(raw), "--nonblocking"]
    return subprocess.Popen([*argv, "--full-filenames", "--nolineno", "--gil"], stdout=subprocess.DEVNULL)


def profile_lines(raw: Path, run: dict[str, Any], top: int) -> list[str]:
    from benchmarks.profile_server import parse, report

    per_token_ms = (run["server_us_per_token"] or 0) / 1000
    lines = report(parse(raw), run["load"]["tokens"], per_token_ms, top)
    # report() speaks of calls; here the unit is a forwarded token.
    return [
        line.replace(" calls;", " forwarded tokens;").replace("per call", "per token").replace("ms/call", "ms/token")
        for line in lines
    ]


# --- Report --------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:,.{digits}f}"


def slope(runs: list[dict[str, Any]], key: str) -> float | None:
    """KiB per in-flight call: least-squares slope of (steady - `key`) RSS over C."""
    points = [(r["c"], r["rss_kib"]["steady"] - r["rss_kib"][key]) for r in runs if r["rss_kib"]["steady"] is not None]
    if len(points) < 2:
        return None
    mean_c = statistics.mean(c for c, _ in points)
    mean_r = statistics.mean(r for _, r in points)
    denominator = sum((c - mean_c) ** 2 for c, _ in points)
    return sum((c - mean_c) * (r - mean_r) for c, r in points) / denominator if denominator else None


def table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| system | C | holds | calls ok / err / abandoned | server cores | server µs/token | / floor "
        "| µs/notification | token lag p50 / p99 / max ms | newest-token lag p50 / p99 / max ms "
        "| first progress p50 / p99 ms | call p99 s | /healthz p50 / p99 / max ms | RSS idle → connected → steady MiB "
        "| KiB per call | upstream streams: ended / cut / resent / peak | emulator cores | load cores "
        "| others' cores | official ok |",
        "|---" * 20 + "|",
    ]
    floor = {(r["system"].replace("floor-", "gguf-"), r["c"]): r for r in runs if r["system"].startswith("floor")}
    for r in runs:
        load = r["load"]
        if "failed" in load:
            lines.append(f"| {r['system']} | {r['c']} | no | load failed: {load['failed']} |" + " |" * 16)
            continue
        base = floor.get((r["system"].removesuffix("-w2"), r["c"])) if r["system"].startswith("gguf") else None
        ratio = (
            fmt(r["server_us_per_token"] / base["server_us_per_token"], 2) + "x"
            if base and base["server_us_per_token"] and r["server_us_per_token"]
            else "-"
        )
        rss = r["rss_kib"]
        per_call = (rss["steady"] - rss["connected"]) / r["c"] if rss["steady"] is not None else None
        up = r["upstream"]
        upstream = f"{up['completed']} / {up['cut']} / {up['resent']} / {up['peak_streams']}" if up else "-"
        lag, newest, first, health = load["token_lag"], load["newest_token_lag"], load["first_progress"], r["health_ms"]
        lines.append(
            f"| {r['system']} | {r['c']} | {'yes' if r['holds'] else 'no'} "
            f"| {load['calls_total'] - load['errors_total']} / {load['errors_total']} / {load['abandoned']} "
            f"| {fmt(r['cores']['server'], 2)} | {fmt(r['server_us_per_token'])} | {ratio} "
            f"| {fmt(r['server_us_per_notification'])} "
            f"| {fmt(lag['p50_ms'])} / {fmt(lag['p99_ms'])} / {fmt(lag['max_ms'])} "
            f"| {fmt(newest['p50_ms'], 1)} / {fmt(newest['p99_ms'], 1)} / {fmt(newest['max_ms'])} "
            f"| {fmt(first['p50_ms'])} / {fmt(first['p99_ms'])} | {fmt(load['call_seconds']['p99_ms'] / 1000, 1)} "
            f"| {fmt(health['p50'], 1)} / {fmt(health['p99'], 1)} / {fmt(health['max'])} "
            f"| {rss['idle'] / 1024:.0f} → {rss['connected'] / 1024:.0f} → {fmt((rss['steady'] or 0) / 1024)} "
            f"| {fmt(per_call)} | {upstream} | {fmt(r['cores']['emulator'], 2)} | {fmt(r['cores']['loadgen'], 2)} "
            f"| {fmt(r['cores']['others'], 2)} | {r['official']['ok']}/{r['official']['calls']} |"
        )
    return lines


def slopes(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| system | KiB per in-flight call (slope of steady - connected) "
        "| KiB per session (slope of connected - idle) |",
        "|---|---|---|",
    ]
    for system in dict.fromkeys(r["system"] for r in runs):
        mine = [r for r in runs if r["system"] == system and "failed" not in r["load"]]
        sessions = None
        points = [(r["c"], r["rss_kib"]["connected"] - r["rss_kib"]["idle"]) for r in mine]
        if len(points) >= 2:
            mc, mr = statistics.mean(c for c, _ in points), statistics.mean(v for _, v in points)
            d = sum((c - mc) ** 2 for c, _ in points)
            sessions = sum((c - mc) * (v - mr) for c, v in points) / d if d else None
        lines.append(f"| {system} | {fmt(slope(mine, 'connected'), 1)} | {fmt(sessions, 1)} |")
    return lines


def plot(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    Value = Callable[[dict[str, Any]], float]
    panels: list[tuple[Any, str, Value, bool]] = [
        (axes[0][0], "newest-token lag p99 (ms)", lambda r: r["load"]["newest_token_lag"]["p99_ms"], True),
        (axes[0][1], "server CPU per forwarded token (µs)", lambda r: r["server_us_per_token"], False),
        (
            axes[1][0],
            "server RSS at steady state - before the load (MiB)",
            lambda r: ((r["rss_kib"]["steady"] or 0) - r["rss_kib"]["idle"]) / 1024,
            False,
        ),
        (axes[1][1], "time to first progress p99 (ms)", lambda r: r["load"]["first_progress"]["p99_ms"], True),
    ]
    for ax, label, value, log_y in panels:
        for system in dict.fromkeys(r["system"] for r in runs):
            mine = [r for r in runs if r["system"] == system and "failed" not in r["load"]]
            ax.plot([r["c"] for r in mine], [value(r) for r in mine], marker="o", label=system,
                    linestyle="--" if system.startswith("floor") else "-")  # fmt: skip
        ax.set_xscale("log")
        levels = sorted({r["c"] for r in runs})
        ax.set_xticks(levels, [str(c) for c in levels])
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("concurrent streamed calls (C)")
        ax.set_title(label, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].axhline(100, color="grey", linewidth=0.8, linestyle=":")  # the aim: p99 under 100 ms
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --- Main ----------------------------------------------------------------------------------------


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=None, help=f"values of C (default {LEVELS})")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=None)
    parser.add_argument(
        "--quick", action="store_true", help="C = 10 100 500, gguf-stateful and its floor, short windows"
    )
    parser.add_argument("--window", type=float, default=None, help="seconds of load per run (default 12; quick 6)")
    parser.add_argument("--drain", type=float, default=15.0, help="then at most this long for calls to end")
    parser.add_argument("--max-tokens", type=int, default=None, help="tokens per call (default 64; quick 32)")
    parser.add_argument("--ttft", type=float, default=0.3)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--parallel", type=int, default=100_000, help="the emulator's slots")
    parser.add_argument("--holds-ms", type=float, default=100.0, help="newest-token p99 lag bound for 'holds'")
    parser.add_argument("--gguf-python", help="run gguf-mcp with this interpreter (its own installed gguf_mcp)")
    parser.add_argument("--ref", help="run gguf-mcp as of this git ref (exported; on --gguf-python or this venv)")
    parser.add_argument(
        "--gguf-env", action="append", default=[], metavar="NAME=VALUE",
        help="a setting for gguf-mcp (repeatable), e.g. GGUF_MCP_AUDIT_LOG=/tmp/audit.jsonl",
    )  # fmt: skip
    parser.add_argument(
        "--server-path",
        metavar="DIR",
        help="put DIR first on the servers' PYTHONPATH, e.g. uvloop and httptools from `pip install --target DIR` "
        "(uvicorn then uses them): what they buy",
    )
    parser.add_argument("--profile", type=int, metavar="C", help="py-spy gguf-stateful at this C")
    parser.add_argument("--gc-probe", action="store_true", help="time gguf-mcp's GC pauses (benchmarks/gc_probe.py)")
    parser.add_argument("--gc-freeze", action="store_true", help="the same, after gc.freeze() (a proposed fix)")
    parser.add_argument("--gc-threshold", metavar="A,B,C", help="the same, with gc.set_threshold(A, B, C)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--png", type=Path)
    options = parser.parse_args(argv)
    quick = options.quick
    options.levels = options.levels or ([10, 100, 500] if quick else list(LEVELS))
    options.systems = options.systems or (["gguf-stateful", "floor-stateful"] if quick else list(DEFAULT_SYSTEMS))
    options.window = options.window or (6.0 if quick else 12.0)
    options.max_tokens = options.max_tokens or (32 if quick else 64)
    return options


async def main() -> None:
    options = parse_options()
    raise_fd_limit()
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    profile: list[str] = []
    emulator_args = [
        "--ttft",
        str(options.ttft),
        "--interval",
        str(options.interval),
        "--parallel",
        str(options.parallel),
    ]
    with tempfile.TemporaryDirectory() as tmp, listening(module_argv("emulator", *emulator_args)) as (emulator, port):
        options.emulator_url, options.emulator_pid = f"http://127.0.0.1:{port}", emulator.pid
        workdir = Path(tmp)
        for system in options.systems:
            for c in options.levels:
                run = await one_run(system, c, options, workdir)
                runs.append(run)
                load = run["load"]
                print(
                    f"# {system} C={c}: holds={run['holds']} errors={load.get('errors_total')} "
                    f"abandoned={load.get('abandoned')} "
                    f"newest p99={fmt(load.get('newest_token_lag', {}).get('p99_ms'), 1)} ms "
                    f"server {fmt(run['cores']['server'], 2)} cores, {fmt(run['server_us_per_token'])} µs/token "
                    f"[{time.monotonic() - started:.0f} s]",
                    file=sys.stderr,
                    flush=True,
                )
                if load.get("errors"):
                    print(f"#   errors: {json.dumps(load['errors'])[:600]}", file=sys.stderr, flush=True)
                if options.profile == c and system == "gguf-stateful" and (workdir / "profile.raw").exists():
                    profile = profile_lines(workdir / "profile.raw", run, options.top)
    code = source_of(options.ref) if options.ref or not options.gguf_python else Path(options.gguf_python)
    head = (
        f"gguf-mcp scale sweep, {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}, Python {platform.python_version()}, mcp {version('mcp')}; gguf-mcp from {code}"
        f"{' @ ' + options.ref if options.ref else ''}; {options.max_tokens} tokens per call, first after "
        f"{options.ttft * 1000:.0f} ms then every {options.interval * 1000:.0f} ms; "
        f"{options.window:g} s of load per run; "
        f"{time.monotonic() - started:.0f} s in all"
    )
    out = [head, "", *table(runs), "", *slopes(runs)]
    if profile:
        out += ["", f"py-spy, gguf-stateful at C={options.profile} (server CPU per forwarded token):", "", *profile]
    print("\n".join(out), flush=True)
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        raw = {
            "head": head,
            "options": {k: v for k, v in vars(options).items() if k not in ("json", "png")},
            "runs": runs,
            "profile": profile,
        }
        options.json.write_text(json.dumps(raw, indent=1, default=str))
    if options.png:
        options.png.parent.mkdir(parents=True, exist_ok=True)
        plot(runs, options.png, head[:160])


if __name__ == "__main__":
    anyio.run(main)
