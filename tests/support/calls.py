"""What tests read off MCP calls: a result's text, and the progress notifications of a call."""

from __future__ import annotations

import anyio
from mcp.types import CallToolResult

from tests.support.gateway import ACCOUNT_KEY, Gateway


def text_of(result: CallToolResult) -> str:
    """The text of a tool result (its first content item), "" when it has none."""
    return result.content[0].text if result.content else ""  # type: ignore[union-attr]


def env_for(gw: Gateway, dep: str = "dep-main", **extra: str) -> dict[str, str]:
    """gguf-mcp's environment for one gateway deployment, with the account key."""
    return {"GGUF_BASE_URL": gw.base_url_for(dep), "MODELSLAB_API_KEY": ACCOUNT_KEY, **extra}


class Progress:
    """A progress callback (which makes gguf-mcp stream): every notification, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[float, float | None, str | None]] = []
        self.first = anyio.Event()

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((progress, total, message))
        self.first.set()

    @property
    def count(self) -> int:
        return len(self.events)

    @property
    def text(self) -> str:
        """The messages joined, as a client joins them: the answer so far."""
        return "".join(m or "" for _, _, m in self.events)
