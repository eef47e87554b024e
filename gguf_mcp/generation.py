"""One generation, start to end: plain or streamed, progress as tokens arrive, a deadline, cancel.

A call streams from the deployment only when that buys something (the caller sent a progress
token, or a deadline needs the partial text): a plain request is cheaper. Streamed or not, the
answer comes back in the dialect's non-streamed shape, redacted as a whole (a key the model
echoed one token at a time is masked too). Cancelling the call closes the upstream request,
which is what makes llama.cpp stop generating.
"""

from __future__ import annotations

import math
import time
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.server.mcpserver import Context

from gguf_mcp.config import Deployment
from gguf_mcp.dialects import Dialect
from gguf_mcp.errors import UpstreamError, no_output_by_deadline, stream_failed_with_partial
from gguf_mcp.redaction import StreamRedactor
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
    *,
    deadline: float | None,
    max_tokens: int | None,
) -> Answer:
    """Send `body` to the dialect's endpoint and return the answer; raises `GGUFMCPError`."""
    meta = ctx.request_context.meta
    wants_progress = meta is not None and meta.get("progress_token") is not None
    if not wants_progress and deadline is None:
        return Answer(await upstream.post(dep, dialect.endpoint, body))

    stream = dialect.assembler()
    progress = Progress(ctx, max_tokens, upstream.redactor.stream()) if wants_progress else None
    with anyio.move_on_after(deadline if deadline is not None else math.inf) as scope:
        try:
            async with aclosing(upstream.stream(dep, dialect.endpoint, body)) as events:
                async for event in events:
                    new = stream.add(event)
                    if progress is not None:
                        await progress.add(new, stream.tokens)
        except UpstreamError as exc:
            if stream.text:  # nothing is lost silently: the error carries what had arrived
                partial = upstream.redactor.text(stream.text)
                exc.args = (stream_failed_with_partial(exc.args[0], stream.tokens, partial),)
            raise
    if progress is not None:
        await progress.finish(stream.tokens)
    if scope.cancelled_caught:
        if not stream.tokens:
            raise no_output_by_deadline(dep.name, deadline or 0.0)
        return Answer(upstream.redactor.data(stream.response("deadline")), deadline)
    return Answer(upstream.redactor.data(stream.response()))
