"""The README's code blocks, for the tests that run them as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def code_after(marker: str, skip: int = 0) -> tuple[str, str]:
    """The first fenced block after `marker` in the README (after `skip` others): (language, text)."""
    text = README.read_text()
    start = text.index(marker)
    blocks = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
    found: list[re.Match[str]] = []
    for _ in range(skip + 1):
        block = blocks.search(text, start)
        assert block is not None, f"no code block after {marker!r}"
        found.append(block)
        start = block.end()
    return found[-1].group(1), found[-1].group(2)
