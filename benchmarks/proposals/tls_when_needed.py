"""Proposal D: load the CA bundle only when a deployment is reached over HTTPS.

`httpx.AsyncClient()` builds a verifying SSL context at once: loading certifi's CA bundle costs
35-50 ms of start-up and ~1.8 MiB of resident memory, in every process, even when every
deployment is a plain-HTTP llama-server on the local network. Deployments are fixed at start, so
the client can skip it when none is HTTPS (`verify=False` then only means "no TLS context": no
request can use TLS). GGUF Cloud deployments (HTTPS) keep it.

The change to `gguf_mcp/upstream.py` is in `open_upstream` only; `apply()` installs it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from gguf_mcp import upstream
from gguf_mcp.config import Settings


@asynccontextmanager
async def open_upstream(settings: Settings) -> AsyncIterator[upstream.UpstreamClient]:
    timeout = httpx.Timeout(connect=10.0, read=settings.timeout, write=30.0, pool=30.0)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0)
    tls = any(d.base_url.startswith("https://") for d in settings.deployments.values())
    async with httpx.AsyncClient(
        timeout=timeout, limits=limits, headers={"user-agent": upstream.USER_AGENT}, verify=tls
    ) as http:
        yield upstream.UpstreamClient(http, settings)


def apply() -> None:
    setattr(upstream, "open_upstream", open_upstream)  # noqa: B010 - replacing a module attribute
