"""One generation, start to end: plain or streamed, progress as tokens arrive, a deadline, cancel.

A call streams from the deployment only when that buys something (the caller sent a progress
token, or a deadline needs the partial text): a plain request is cheaper. Streamed or not, the
answer comes back in the dialect's non-streamed shape, redacted as a whole (a key the model
echoed one token at a time is masked too). Cancelling the call closes the upstream request,
which is what makes llama.cpp stop generating.

The call's fair-share record (`gguf_mcp.fairshare.Call`) hears what only the generation knows:
the first token, the tokens the deployment reported (or, of a stream cut short, those counted so
far), and a stop at the deadline.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.server.mcpserver import Context

from gguf_mcp.config import Deployment
from gguf_mcp.dialects import Dialect, reported_tokens
from gguf_mcp.errors import UpstreamError, no_output_by_deadline, stream_failed_with_partial
from gguf_mcp.fairshare import Call, waiting_message
from gguf_mcp.fairshare.queue import OnWait
from gguf_mcp.redaction import StreamRedactor
from gguf_mcp.streams import Assembler
from gguf_mcp.upstream import UpstreamClient


class Progress:
    """`notifications/progress` as tokens arrive: the first at once, then at most every 0.1 s.

    Each message carries the text generated since the previous one, so a client that joins
    them gets the whole answer; `progress` counts tokens and only grows. Text that could be the
    beginning of a secret waits for the next message, so a key split across two is masked.
    """

    INTERVAL = 0.1

    def __init__(self, ctx: Context[Any, Any], total: int | None, redactor: StreamRedactor) -> None:
        self._ctx = ctx
        self._total = float(total) if total else None
        self._redactor = redactor
        self._pending: list[str] = []
        self._last = -math.inf

    async def add(self, text: str, tokens: int) -> None:
        if text:
            self._pending.append(self._redactor.feed(text))
            if time.monotonic() - self._last >= self.INTERVAL:
                await self._send(tokens)

    async def finish(self, tokens: int) -> None:
        self._pending.append(self._redactor.flush())
        await self._send(tokens)

    async def _send(self, tokens: int) -> None:
        message = "".join(self._pending)
        if message:
            self._pending.clear()
            self._last = time.monotonic()
            await self._ctx.report_progress(tokens, self._total, message)


def wants_progress(ctx: Context[Any, Any]) -> bool:
    """Whether the call carries a progress token (else `report_progress` sends nothing)."""
    meta = ctx.request_context.meta
    return meta is not None and meta.get("progress_token") is not None


def waiting_notices(ctx: Context[Any, Any], deployment: str) -> OnWait | None:
    """While the call waits for a free slot, a progress notification whenever its place changes
    (None without a progress token: nobody to tell).

    `progress` stays below 1 and grows with each one, as the specification asks of progress; the
    first token's notification is 1 or more, and from there on the messages are the answer's text.
    """
    if not wants_progress(ctx):
        return None
    told = 0

    async def tell(ahead: int) -> None:
        nonlocal told
        told += 1
        await ctx.report_progress(told / (told + 1), None, waiting_message(deployment, ahead))

    return tell


@dataclass(frozen=True)
class Answer:
    """The deployment's answer in its dialect's non-streamed shape; `deadline` set when it cut it short."""

    data: Any
    deadline: float | None = None


async def generate(
    ctx: Context[Any, Any],
    upstream: UpstreamClient,
    dep: Deployment,
    dialect: Dialect,
    body: dict[str, Any],
    call: Call,
    *,
    deadline: float | None,
) -> Answer:
    """Send `body` to the dialect's endpoint and return the answer; raises `GGUFMCPError`.

    `deadline` is the call's (seconds from its arrival): what it waited for a slot comes off it.
    """
    progressing = wants_progress(ctx)
    if not progressing and deadline is None:
        data = await upstream.post(dep, dialect.endpoint, body)
        reported(call, data)
        return Answer(data)

    stream = dialect.assembler()
    progress = Progress(ctx, call.max_tokens, upstream.redactor.stream()) if progressing else None
    try:
        with anyio.move_on_after(call.remaining(deadline) if deadline is not None else math.inf) as scope:
            await _relay(upstream.stream(dep, dialect.endpoint, body), stream, call, progress)
    except BaseException as exc:  # broken or cancelled: what was generated was generated, and counts
        reported(call, stream.response("cut"))
        if isinstance(exc, UpstreamError) and stream.text:  # nothing is lost silently: the error carries it
            partial = upstream.redactor.text(stream.text)
            exc.args = (stream_failed_with_partial(exc.args[0], stream.tokens, partial),)
        raise
    if progress is not None:
        await progress.finish(stream.tokens)
    if scope.cancelled_caught:
        if not stream.tokens:
            raise no_output_by_deadline(dep.name, deadline or 0.0)
        call.stopped_at_deadline()
        return Answer(reported(call, upstream.redactor.data(stream.response("deadline"))), deadline)
    return Answer(reported(call, upstream.redactor.data(stream.response())))


async def _relay(
    events: AsyncGenerator[dict[str, Any], None], stream: Assembler, call: Call, progress: Progress | None
) -> None:
    """Every event into `stream`, the first token to `call`, the new text to `progress`."""
    async with aclosing(events):
        async for event in events:
            new = stream.add(event)
            if stream.tokens:
                call.first_token()
            if progress is not None:
                await progress.add(new, stream.tokens)


def reported(call: Call, data: Any) -> Any:
    """Tell the call the tokens and model the answer reports; returns `data`."""
    model = data.get("model") if isinstance(data, dict) else None
    call.usage(*reported_tokens(data), model if isinstance(model, str) else None)
    return data
