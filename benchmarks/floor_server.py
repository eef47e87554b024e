"""The scale benchmark's floor: a bare `MCPServer` whose `chat` and `messages` emit gguf-mcp's progress
from an in-process generator, with no upstream at all.

Same token timing as `benchmarks/emulator.py` (`--ttft`, then one token every `--interval` up
to `max_tokens`), same token text (the stamp `@<monotonic> ` of when the token was due: an
emulated deployment sends on schedule, so this loop's own stalls count as lag as they would),
and the same progress policy as gguf-mcp's tools (the first token at once, then the text
gathered since, at most every 0.1 s), so a client sees the same notifications and the same
result text. Whatever this process spends per token is the SDK's cost, which gguf-mcp cannot
go below. `/healthz` answers as gguf-mcp's does, for the event-loop probe.

    .venv/bin/python -m benchmarks.floor_server --port 8000 [--stateless] [--ttft 0.3] [--interval 0.05]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from benchmarks.common import raise_fd_limit

PROGRESS_INTERVAL = 0.1  # gguf_mcp.tools._Progress.INTERVAL
TIMING = {"ttft": 0.3, "interval": 0.05}
server = MCPServer("floor", log_level="WARNING")


@server.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator]
async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})


async def generate(ctx: Context[Any, Any], max_tokens: int) -> str:
    """Stamped tokens at the emulator's pace, reported as gguf-mcp reports them."""
    parts: list[str] = []
    pending: list[str] = []
    last = -math.inf
    due = time.monotonic() + TIMING["ttft"]
    for count in range(1, max_tokens + 1):
        await anyio.sleep(max(0.0, due - time.monotonic()))
        # Stamped with when the token was due, not when this loop got to it: the emulator sends on
        # schedule whatever the bridge is doing, so a stalled loop (GC, CPU) must show here too.
        token = f"@{due:.6f} "
        due += TIMING["interval"]
        parts.append(token)
        pending.append(token)
        if time.monotonic() - last >= PROGRESS_INTERVAL:
            last = time.monotonic()
            await ctx.report_progress(count, max_tokens, "".join(pending))
            pending.clear()
    if pending:
        await ctx.report_progress(max_tokens, max_tokens, "".join(pending))
    return "".join(parts)


def _result(text: str, structured: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


@server.tool()
async def chat(
    ctx: Context[Any, Any], messages: list[dict[str, Any]], max_tokens: int = 16, temperature: float | None = None
) -> CallToolResult:
    """Stream stamped tokens (OpenAI shape)."""
    text = await generate(ctx, max_tokens)
    usage = {"prompt_tokens": 16, "completion_tokens": max_tokens, "total_tokens": 16 + max_tokens}
    return _result(text, {"text": text, "finish_reason": "length", "usage": usage, "model": "emu", "deployment": "d"})


@server.tool()
async def messages(
    ctx: Context[Any, Any], messages: list[dict[str, Any]], max_tokens: int, temperature: float | None = None
) -> CallToolResult:
    """Stream stamped tokens (Anthropic shape)."""
    text = await generate(ctx, max_tokens)
    structured = {
        "text": text,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 16, "output_tokens": max_tokens},
        "model": "emu",
        "deployment": "d",
    }
    return _result(text, structured)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stateless", action="store_true")
    parser.add_argument("--ttft", type=float, default=TIMING["ttft"])
    parser.add_argument("--interval", type=float, default=TIMING["interval"])
    args = parser.parse_args()
    TIMING.update(ttft=args.ttft, interval=args.interval)
    raise_fd_limit()
    app = server.streamable_http_app(stateless_http=args.stateless, host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
