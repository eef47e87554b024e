"""Which HTTP client for the upstream hot path: per-request wall time and CPU time, interleaved.

Clients, each used the way `gguf_mcp/upstream.py` uses httpx (one pooled client, prebuilt
headers, the body serialised once with `json.dumps`, the answer parsed with `json.loads`):

- `httpx`: `httpx.AsyncClient` with gguf-mcp's timeouts and limits (what ships today);
- `httpx-aiohttp`: the same httpx API on `httpx_aiohttp.AiohttpTransport` (`HttpxAiohttpClient`),
  so `upstream.py` and its SSE parser (`gguf_mcp.streams.sse_events`) stay as they are;
- `httpcore`: httpx's own transport layer (`httpcore.AsyncConnectionPool`) used directly, without
  httpx's request/response models; streams parsed line by line; no new dependency;
- `aiohttp`: a plain `aiohttp.ClientSession`; streams parsed line by line (`data: ...`);
- `raw`: a minimal keep-alive HTTP/1.1 client on asyncio streams, non-streamed only: not a
  candidate, just the floor, to show what each client costs on top of the socket work.

Requests: a non-streamed chat POST (`max_tokens: 8`) and the same with `stream: true` (read to
`[DONE]` and to the end, as gguf-mcp does). Upstreams: the instant one and llama.cpp's server
(keyless, tiny model). Per request: wall time (median of each block, then median over rounds)
and CPU time of this process (`time.process_time` over the block / requests): CPU is what
limits throughput on a busy machine. A stale-connection check then sends `--stale-calls`
requests per client (every 5th streamed) to upstreams that close kept-alive connections after
100 answers without saying so, with no retry, and counts the errors by exception type: the
resend-once rule in `upstream.py` must catch exactly what a client raises there.

    .venv/bin/python -m benchmarks.http_clients [--rounds 10] [--requests 100] [--upstream instant llama]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpcore
import httpx
from httpx_aiohttp import HttpxAiohttpClient

from benchmarks.common import instant_upstream, pct
from gguf_mcp.streams import sse_events
from tests.support.llama import running_llama_server
from tests.support.tiny_model import write_tiny_model

BODY = {"model": "local", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 8}
CONTENT = json.dumps(BODY).encode()
STREAM_CONTENT = json.dumps({**BODY, "stream": True, "stream_options": {"include_usage": True}}).encode()
HEADERS = {"content-type": "application/json"}
CLIENTS = ("httpx", "httpcore", "httpx-aiohttp", "aiohttp", "raw")
Request = Callable[[], Awaitable[int]]
"""One request; returns how many JSON objects it parsed (1, or the stream's events)."""


def _timeout() -> httpx.Timeout:
    return httpx.Timeout(connect=10.0, read=300.0, write=30.0, pool=30.0)


def _limits() -> httpx.Limits:
    return httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0)


def _httpx_requests(http: httpx.AsyncClient, url: str) -> tuple[Request, Request]:
    async def plain() -> int:
        request = http.build_request("POST", url, content=CONTENT, headers=HEADERS)
        response = await http.send(request)
        response.raise_for_status()
        json.loads(response.content)
        return 1

    async def stream() -> int:
        request = http.build_request("POST", url, content=STREAM_CONTENT, headers=HEADERS)
        response = await http.send(request, stream=True)
        events, done = 0, False
        try:
            response.raise_for_status()
            async for _, data in sse_events(response.aiter_bytes(), 1 << 20):
                if done:
                    continue
                if data == "[DONE]":
                    done = True
                    continue
                json.loads(data)
                events += 1
        finally:
            await response.aclose()
        return events

    return plain, stream


def _httpcore_requests(pool: httpcore.AsyncConnectionPool, url: str) -> tuple[Request, Request]:
    headers = [(b"host", url.split("/")[2].encode()), (b"user-agent", b"bench"), (b"content-type", b"application/json")]
    extensions = {"timeout": {"connect": 10.0, "read": 300.0, "write": 30.0, "pool": 30.0}}

    async def plain() -> int:
        response = await pool.request("POST", url, headers=headers, content=CONTENT, extensions=extensions)
        if response.status >= 400:
            raise RuntimeError(response.status)
        json.loads(response.content)
        return 1

    async def stream() -> int:
        events, done, buffer = 0, False, b""
        async with pool.stream("POST", url, headers=headers, content=STREAM_CONTENT, extensions=extensions) as r:
            if r.status >= 400:
                raise RuntimeError(r.status)
            async for chunk in r.aiter_stream():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if done or not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        continue
                    json.loads(data)
                    events += 1
        return events

    return plain, stream


def _aiohttp_requests(session: aiohttp.ClientSession, url: str) -> tuple[Request, Request]:
    async def plain() -> int:
        async with session.post(url, data=CONTENT, headers=HEADERS) as response:
            response.raise_for_status()
            json.loads(await response.read())
        return 1

    async def stream() -> int:
        events, done = 0, False
        async with session.post(url, data=STREAM_CONTENT, headers=HEADERS) as response:
            response.raise_for_status()
            async for line in response.content:  # lines, as SSE needs (a data field per line)
                if done or not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    continue
                json.loads(data)
                events += 1
        return events

    return plain, stream


class RawClient:
    """One kept-alive HTTP/1.1 connection, content-length answers only: the floor, not a candidate."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split("/")[0].rsplit(":", 1)
        self.host, self.port, self.path = host, int(port), "/" + url.removeprefix("http://").split("/", 1)[1]
        self.head = (
            f"POST {self.path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(CONTENT)}\r\n\r\n"
        ).encode()
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def plain(self) -> int:
        for attempt in (1, 2):
            if self.streams is None:
                self.streams = await asyncio.open_connection(self.host, self.port)
            reader, writer = self.streams
            try:
                writer.write(self.head + CONTENT)
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
                self.streams = None
                if attempt == 2:
                    raise
                continue
            lines = head.split(b"\r\n")
            length = next(int(v) for k, _, v in (x.partition(b":") for x in lines) if k.lower() == b"content-length")
            json.loads(await reader.readexactly(length))
            if any(x.lower().replace(b" ", b"") == b"connection:close" for x in lines):
                writer.close()
                self.streams = None
            return 1
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self.streams is not None:
            self.streams[1].close()


def stale(name: str, exc: Exception) -> bool:
    """Whether `exc` is `name`'s error for a kept-alive connection the server had closed.

    httpx raises RemoteProtocolError. httpx-aiohttp maps aiohttp's ServerDisconnectedError and
    "Can not write request body" (ClientOSError) to httpx.ConnectTimeout (its table maps every
    ClientConnectionError so), so only the cause tells them from a real connect time-out.
    """
    if name == "httpx":
        return isinstance(exc, httpx.RemoteProtocolError)
    if name == "httpcore":
        return isinstance(exc, httpcore.RemoteProtocolError)
    if name == "httpx-aiohttp":
        cause = exc.__cause__
        return isinstance(exc, httpx.TransportError) and isinstance(
            cause, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError
        )
    if name == "aiohttp":
        return isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)
    return False


def resending(name: str, request: Request, resent: Counter[str]) -> Request:
    """`request`, sent once more at once on a stale connection (gguf-mcp's rule in upstream.py)."""

    async def send() -> int:
        try:
            return await request()
        except Exception as exc:
            if not stale(name, exc):
                raise
            resent[name] += 1
            return await request()

    return send


@asynccontextmanager
async def clients(
    url: str, names: list[str], resent: Counter[str] | None = None
) -> AsyncIterator[dict[str, tuple[Request, Request | None]]]:
    """Each client's (plain, stream) requests to `url` + /v1/chat/completions, on one pooled client.

    With `resent`, requests are resent once on a stale connection, counted there.
    """
    chat = url + "/v1/chat/completions"
    async with AsyncExitStack() as stack:
        found: dict[str, tuple[Request, Request | None]] = {}
        for name in names:
            if name == "httpx":
                http = httpx.AsyncClient(timeout=_timeout(), limits=_limits(), headers={"user-agent": "bench"})
                found[name] = _httpx_requests(await stack.enter_async_context(http), chat)
            elif name == "httpcore":
                pool = httpcore.AsyncConnectionPool(
                    max_connections=100, max_keepalive_connections=20, keepalive_expiry=30
                )
                found[name] = _httpcore_requests(await stack.enter_async_context(pool), chat)
            elif name == "httpx-aiohttp":
                http = HttpxAiohttpClient(timeout=_timeout(), limits=_limits(), headers={"user-agent": "bench"})
                found[name] = _httpx_requests(await stack.enter_async_context(http), chat)
            elif name == "aiohttp":
                connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=30.0)
                timeout = aiohttp.ClientTimeout(sock_connect=10.0, sock_read=300.0)
                session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers={"user-agent": "bench"})
                found[name] = _aiohttp_requests(await stack.enter_async_context(session), chat)
            else:
                raw = RawClient(chat)
                stack.push_async_callback(raw.aclose)
                found[name] = (raw.plain, None)
        if resent is not None:
            for name, (plain, stream) in found.items():
                found[name] = (
                    resending(name, plain, resent),
                    resending(name, stream, resent) if stream is not None else None,
                )
        yield found


async def measure(url: str, names: list[str], rounds: int, requests: int) -> dict[str, Any]:
    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    samples: dict[str, list[float]] = {}
    resent: Counter[str] = Counter()
    async with clients(url, names, resent) as found:
        for plain, stream in found.values():  # warm-up
            for _ in range(10):
                await plain()
                if stream is not None:
                    await stream()
        for _ in range(rounds):
            for name, (plain, stream) in found.items():
                for kind, request in (("plain", plain), ("stream", stream)):
                    if request is None:
                        continue
                    key = f"{name} {kind}"
                    times = []
                    cpu_started = time.process_time()
                    for _ in range(requests):
                        started = time.perf_counter()
                        await request()
                        times.append((time.perf_counter() - started) * 1000)
                    cpu.setdefault(key, []).append((time.process_time() - cpu_started) * 1000 / requests)
                    wall.setdefault(key, []).append(statistics.median(times))
                    samples.setdefault(key, []).extend(times)
    return {"wall": wall, "cpu": cpu, "samples": samples, "resent": dict(resent)}


async def stale_check(url: str, names: list[str], calls: int) -> dict[str, dict[str, int]]:
    """Errors by exception type over `calls` requests (every 5th streamed), no retry."""
    errors: dict[str, dict[str, int]] = {}
    async with clients(url, names) as found:
        for name, (plain, stream) in found.items():
            counted: Counter[str] = Counter()
            for i in range(calls):
                request = stream if stream is not None and i % 5 == 4 else plain
                try:
                    await request()
                    counted["ok"] += 1
                except Exception as exc:
                    counted[f"{type(exc).__module__}.{type(exc).__name__}"] += 1
            errors[name] = dict(counted)
    return errors


def report(results: dict[str, dict[str, Any]], stale_errors: dict[str, dict[str, dict[str, int]]]) -> list[str]:
    lines = [
        "| upstream | client | request | wall p50 ms | wall p90 ms | CPU ms / request | wall vs httpx | CPU vs httpx |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for upstream, result in results.items():
        wall, cpu, samples = result["wall"], result["cpu"], result["samples"]
        for key in wall:
            kind = key.split(" ")[1]
            base = f"httpx {kind}"
            d_wall = [a - b for a, b in zip(wall[key], wall[base], strict=True)] if base in wall else []
            d_cpu = [a - b for a, b in zip(cpu[key], cpu[base], strict=True)] if base in cpu else []
            lines.append(
                f"| {upstream} | {key.split(' ')[0]} | {kind} | {statistics.median(wall[key]):.3f} | "
                f"{pct(samples[key], 0.9):.3f} | {statistics.median(cpu[key]):.3f} | "
                f"{statistics.median(d_wall):+.3f} [{min(d_wall):+.3f}..{max(d_wall):+.3f}] | "
                f"{statistics.median(d_cpu):+.3f} [{min(d_cpu):+.3f}..{max(d_cpu):+.3f}] |"
            )
    for upstream, result in results.items():
        if result["resent"]:
            lines.append(f"\nresent once on a stale connection ({upstream}): {result['resent']}")
    if stale_errors:
        lines += ["", "| upstream | client | outcomes, no retry |", "|---|---|---|"]
        for upstream, found in stale_errors.items():
            for name, counted in found.items():
                lines.append(f"| {upstream} | {name} | {', '.join(f'{k}: {v}' for k, v in counted.items())} |")
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=100, help="requests per client, kind and round")
    parser.add_argument("--upstream", nargs="+", choices=["instant", "llama"], default=["instant", "llama"])
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS))
    parser.add_argument("--stale-calls", type=int, default=250, help="0 skips the stale-connection check")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    names = [n for n in CLIENTS if n in options.clients]

    results: dict[str, dict[str, Any]] = {}
    stale_errors: dict[str, dict[str, dict[str, int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for upstream in options.upstream:
            if upstream == "instant":
                with instant_upstream() as url:
                    results[upstream] = await measure(url, names, options.rounds, options.requests)
                if options.stale_calls:
                    with instant_upstream("--close-after", "100") as url:
                        stale_errors["instant --close-after 100"] = await stale_check(url, names, options.stale_calls)
            else:
                model = write_tiny_model(Path(tmp) / "tiny.gguf")
                with running_llama_server(model, "", log_path=Path(tmp) / "llama.log") as llama:
                    results[upstream] = await measure(llama.url, names, options.rounds, options.requests)
                    if options.stale_calls:
                        stale_errors["llama"] = await stale_check(llama.url, names, options.stale_calls)
    print(
        f"HTTP clients, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, httpx {httpx.__version__}, aiohttp {aiohttp.__version__}; "
        f"{options.rounds} rounds x {options.requests} requests, interleaved; deltas: median [min..max] per round\n"
    )
    print("\n".join(report(results, stale_errors)))
    if options.json:
        options.json.write_text(json.dumps({"results": results, "stale": stale_errors}, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
