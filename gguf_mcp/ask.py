"""`gguf-mcp ask "..."`: one chat from the terminal, the answer printed as it arrives.

The quick start's first answer, before any MCP client is set up: the same settings, the same
upstream client (auth, retries, caps, redaction) and the same `chat` dialect as the tool, streamed
(`POST /v1/chat/completions` with `stream: true`) so the words show as the model writes them. A
failure prints the text the tool would give an agent, on one line. Ctrl-C, or a reader that goes
away (`| head`), closes the upstream request, which stops the generation. Imports no MCP SDK: it
starts fast.
"""

from __future__ import annotations

import sys
from contextlib import aclosing
from typing import Any, TextIO

import anyio

from gguf_mcp.bodies import plain
from gguf_mcp.config import Deployment, Settings
from gguf_mcp.dialects import OPENAI_CHAT
from gguf_mcp.errors import GGUFMCPError, UnknownDeployment, error_text
from gguf_mcp.redaction import Redactor
from gguf_mcp.state import find_deployment
from gguf_mcp.upstream import UpstreamClient, upstream_client

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def run_ask(settings: Settings, prompt: str, *, deployment: str | None, max_tokens: int | None) -> int:
    """Stream one answer to stdout; 0 when it completed, 1 when the deployment failed, 2 for an
    unknown deployment. Raises `ConfigError` only."""
    http, upstream = upstream_client(settings)
    try:
        dep = find_deployment(settings, deployment)
    except UnknownDeployment as exc:
        print(report_error(exc, upstream.redactor), file=sys.stderr)
        return EXIT_USAGE
    body: dict[str, Any] = {"model": "local", "messages": [{"role": "user", "content": prompt}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens

    async def ask() -> int:
        async with http:
            try:
                cut = await stream_answer(upstream, dep, body, sys.stdout)
            except GGUFMCPError as exc:
                print(report_error(exc, upstream.redactor), file=sys.stderr)
                return EXIT_FAILED
        if cut:
            print(f"[cut off at max_tokens={max_tokens}: ask again with a larger --max-tokens]", file=sys.stderr)
        return EXIT_OK

    return anyio.run(ask)


def report_error(error: GGUFMCPError, redactor: Redactor) -> str:
    """The one line on stderr: the error's label, then the text a tool gives an agent (as doctor prints it)."""
    return f"gguf-mcp: {error.label}: {plain(error_text(error, redactor))}"


async def stream_answer(upstream: UpstreamClient, dep: Deployment, body: dict[str, Any], out: TextIO) -> bool:
    """Write the answer to `out` piece by piece, redacted; whether max_tokens cut it short. A stream
    that fails leaves what had arrived on a line of its own, then raises."""
    stream = OPENAI_CHAT.assembler()
    redactor = upstream.redactor.stream()  # a key the model echoes is masked, even split across pieces
    wrote = False
    try:
        async with aclosing(upstream.stream(dep, OPENAI_CHAT.endpoint, body)) as events:
            async for event in events:
                if new := stream.add(event):
                    out.write(redactor.feed(new))
                    out.flush()
                    wrote = True
    except GGUFMCPError:
        if wrote:
            out.write(redactor.flush() + "\n")
            out.flush()
        raise
    out.write(redactor.flush() + "\n")
    out.flush()
    return OPENAI_CHAT.read(stream.response(), dep.name).cut_by_max_tokens
