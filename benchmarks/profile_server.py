"""Where a server's per-call CPU goes: py-spy samples the server process under a stream of `chat` calls.

Starts the instant upstream (or llama.cpp's server) and the server over stdio (or Streamable
HTTP), warms it up, then records it with `py-spy record --format raw` (install py-spy into the
venv: `.venv/bin/pip install py-spy`; it needs ptrace rights on the process) while the official
client makes `--calls` calls one after another. Only samples holding the GIL count (`--gil`),
and stacks whose innermost frame is a wait (epoll, a worker thread's queue) are dropped, so the
samples are where CPU goes; their shares are scaled to the server's CPU per call, measured
(utime + stime from /proc) over a first pass of `--calls` calls without the profiler.

The report groups samples two ways:
- self time by package of the innermost Python frame (pydantic_core time shows under the
  pydantic/mcp frame that called it, json's C encoder under json, and so on);
- inclusive time of named stages (a sample counts for every stage on its stack).

    .venv/bin/python -m benchmarks.profile_server [--server gguf|bare] [--transport stdio|http] [--calls 3000]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import anyio
from mcp import Client
from mcp.client.stdio import stdio_client

from benchmarks.common import GGUF_ARGV, ROOT, children, cpu_seconds, gguf_env, instant_upstream
from benchmarks.overhead import ARGS, bare_params, gguf_params
from tests.support.bridge import free_port, serving
from tests.support.llama import running_llama_server
from tests.support.tiny_model import write_tiny_model

PY_SPY = Path(sys.executable).with_name("py-spy")
SITE = re.compile(r"/(?:site|dist)-packages/([A-Za-z0-9_]+)")
STDLIB = re.compile(r"/lib/python3\.\d+/([A-Za-z0-9_]+)")
IDLE = re.compile(r"^(Condition\.wait|EpollSelector\.select|WorkerThread\.run|Queue\.get) ")
# Exclusive stages: a sample goes to the first whose regex matches any frame on its stack.
STAGES = {
    # h11 is not here: over HTTP it is uvicorn's parser (without httptools), counted with the server below.
    "upstream HTTP client (httpx/httpcore, or aiohttp)": r"/(httpx2?|httpcore2?|httpx_sse|aiohttp|aiohappyeyeballs|"
    r"yarl|multidict)/",
    "gguf-mcp's own code (tools, upstream, with the pydantic/json it calls)": r"/gguf_mcp/",
    "SDK: argument validation (FuncMetadata)": r"FuncMetadata\.(validate_arguments|pre_parse_json)|"
    r"model_dump_one_level",
    "SDK: result conversion (convert_result, output validation)": r"convert_result|_output_adapter|_dump_result|"
    r"_seal_result|serialize_server_result",
    "SDK: write the response (serialise, stdout/HTTP)": r"stdout_writer|_write_result|JSONRPCDispatcher\._write|"
    r"ServerRunner\._serialize|EventSourceResponse|sse_starlette",
    "SDK: read + parse requests (stdin, HTTP)": r"stdin_reader|validate_client_request|handle_request \(.*streamable|"
    r"StreamableHTTP",
    "SDK: OpenTelemetry spans": r"opentelemetry|_otel\.py",
    "SDK: dispatch and context (the rest of mcp)": r"/mcp/|/mcp_types/",
    "HTTP server (uvicorn, starlette)": r"/(uvicorn|starlette|httptools|h11)/",
    "event loop, anyio (outside any of the above)": r"/(asyncio|anyio)/",
}


def package(frame: str) -> str:
    match = re.search(r"\((.*)\)$", frame)
    path = match.group(1) if match else frame
    if "/gguf_mcp/" in path:
        return "gguf_mcp (ours)"
    if "/benchmarks/" in path:
        return "benchmarks (bare server)"
    site = SITE.search(path)
    if site:
        name = site.group(1)
        merged = {"httpcore": "httpx", "httpcore2": "httpx2", "pydantic_core": "pydantic", "mcp_types": "mcp"}
        return merged.get(name, name)
    std = STDLIB.search(path)
    if std:
        return f"stdlib {std.group(1)}"
    return path


def parse(raw: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in raw.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def report(stacks: list[tuple[list[str], int]], calls: int, cpu_ms: float, top: int) -> list[str]:
    """Shares of the samples; ms/call scales them to the CPU per call measured without the profiler."""
    stacks = [(frames, count) for frames, count in stacks if not IDLE.match(frames[-1])]
    total = sum(c for _, c in stacks)
    lines = [
        f"{total} samples (holding the GIL, idle waits dropped) over {calls} calls; "
        f"server CPU per call without the profiler: {cpu_ms:.3f} ms (utime + stime from /proc)",
        "",
    ]
    by_package: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    for frames, count in stacks:
        by_package[package(frames[-1])] += count
        leaf = re.sub(rf"\(.*?((?:site|dist)-packages/|/lib/python3\.\d+/|{re.escape(str(ROOT))}/)", "(", frames[-1])
        by_leaf[leaf] += count
    lines += ["| self time by package (innermost frame) | % | ms/call |", "|---|---|---|"]
    for name, count in by_package.most_common():
        lines.append(f"| {name} | {100 * count / total:.1f} | {cpu_ms * count / total:.3f} |")
    staged: Counter[str] = Counter()
    compiled = {label: re.compile(pattern) for label, pattern in STAGES.items()}
    for frames, count in stacks:
        stage = next((label for label, rx in compiled.items() if any(rx.search(f) for f in frames)), "other")
        staged[stage] += count
    lines += ["", "| stage (each sample in the first that matches its stack) | % | ms/call |", "|---|---|---|"]
    for label in [*STAGES, "other"]:
        count = staged[label]
        lines.append(f"| {label} | {100 * count / total:.1f} | {cpu_ms * count / total:.3f} |")
    lines += ["", f"| top {top} innermost frames | % |", "|---|---|"]
    for name, count in by_leaf.most_common(top):
        lines.append(f"| `{name}` | {100 * count / total:.1f} |")
    return lines


@contextmanager
def upstream_url(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "instant":
        with instant_upstream() as url:
            yield url
    else:
        model = write_tiny_model(workdir / "tiny.gguf")
        with running_llama_server(model, "", log_path=workdir / "llama.log") as llama:
            yield llama.url


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=["gguf", "bare"], default="gguf")
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--upstream", choices=["instant", "llama"], default="instant")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw stacks here")
    parser.add_argument("--mode", default="legacy")
    parser.add_argument("--ref", help="profile gguf-mcp as of this git ref (before/after)")
    options = parser.parse_args()
    if not PY_SPY.exists():
        parser.error(f"{PY_SPY} is missing: .venv/bin/pip install py-spy")

    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            stacks, seconds, cpu_ms = await profile(options, Path(tmp), stack)
    print(
        f"py-spy profile of {options.server}{'@' + options.ref if options.ref else ''} over "
        f"{options.transport}, {options.upstream} upstream, "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores: {options.calls} calls in {seconds:.1f} s "
        f"({seconds / options.calls * 1000:.2f} ms per call, profiler attached)\n"
    )
    print("\n".join(report(stacks, options.calls, cpu_ms, options.top)))


async def profile(
    options: argparse.Namespace, workdir: Path, stack: AsyncExitStack
) -> tuple[list[tuple[list[str], int]], float, float]:
    url = stack.enter_context(upstream_url(options.upstream, workdir))
    if options.transport == "stdio":
        params = gguf_params(url, options.ref) if options.server == "gguf" else bare_params()
        before = children()
        client = await stack.enter_async_context(Client(stdio_client(params), mode=options.mode))
        [pid] = children() - before
    else:
        if options.server != "gguf":
            raise SystemExit("--transport http profiles gguf-mcp only")
        port = free_port()
        argv = [*GGUF_ARGV, "--transport", "http", "--port", str(port)]
        server = stack.enter_context(serving(argv, port, gguf_env(url, options.ref), workdir / "http.stderr"))
        client = await stack.enter_async_context(Client(server.url, mode=options.mode))
        pid = server.process.pid
    for _ in range(50):
        await client.call_tool("chat", ARGS)
    cpu_before = cpu_seconds(pid)
    for _ in range(options.calls):
        await client.call_tool("chat", ARGS)
    cpu_ms = (cpu_seconds(pid) - cpu_before) * 1000 / options.calls
    raw = options.raw or workdir / "profile.raw"
    argv = [str(PY_SPY), "record", "-p", str(pid), "-r", str(options.rate), "-f", "raw", "-o", str(raw)]
    spy = subprocess.Popen([*argv, "--full-filenames", "--nolineno", "--gil"], stdout=subprocess.DEVNULL)  # noqa: ASYNC220
    await anyio.sleep(1.0)  # py-spy attaches
    started = time.perf_counter()
    for _ in range(options.calls):
        result = await client.call_tool("chat", ARGS)
        if result.is_error:
            raise RuntimeError(result.content)
    seconds = time.perf_counter() - started
    spy.send_signal(signal.SIGINT)
    await anyio.to_thread.run_sync(spy.wait, 60)
    return parse(raw), seconds, cpu_ms


if __name__ == "__main__":
    anyio.run(main)
