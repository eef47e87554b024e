"""Reading what an upstream said: the human message in an error body, and upstream text made safe to show.

A deployment, a proxy in front of it or a gateway answers errors in any shape (llama-server's
JSON, a FastAPI `detail`, an nginx HTML page, plain text). `upstream_message` finds the sentence
a person would read, `plain` strips what a terminal would act on, `cut` bounds the length. Used
by `gguf_mcp.errors` to quote an upstream, and wherever an upstream string (a model id) enters
the text an agent reads.
"""

from __future__ import annotations

import html
import json
import re

from gguf_mcp.redaction import Redactor

SNIPPET = 300
"""The most characters of an upstream's own words an error quotes."""

_CONTROL = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # a CSI sequence (colours, cursor, clear), 7- or 8-bit
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # an OSC one (window title, link), to its end
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"  # any other control character
)
_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_HTML = re.compile(r"<(!doctype|html|head|body|\?xml|title)", re.IGNORECASE)


def plain(text: str) -> str:
    """Text safe to show: terminal escapes and control characters removed, whitespace collapsed."""
    return " ".join(_CONTROL.sub(" ", text).split())


def cut(text: str, limit: int = SNIPPET) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _page_summary(text: str) -> str:
    """An HTML page (a proxy's or gateway's error page) as its title and a short plain-text excerpt."""
    title_match = _TITLE.search(text)
    title = plain(html.unescape(title_match.group(1))) if title_match else ""
    body = plain(html.unescape(_TAG.sub(" ", text)))
    if title and body.startswith(title):
        body = body[len(title) :].strip()
    excerpt = cut(body, 120)
    if title:
        return f"an HTML page titled {title!r}" + (f": {excerpt}" if excerpt else "")
    return f"an HTML page: {excerpt}" if excerpt else "an empty HTML page"


def _json_message(data: object) -> str | None:
    """The message in an error body's usual JSON shapes: {"error": {"message"}}, {"error": "..."}, {"detail"}."""
    if not isinstance(data, dict):
        return None
    err = data.get("error", data)
    inner = [err.get("message"), err.get("detail")] if isinstance(err, dict) else []
    found = (err, *inner, data.get("detail"), data.get("message"))
    return next((text for text in found if isinstance(text, str) and text), None)


def upstream_message(body: bytes, redactor: Redactor) -> str:
    """The human message inside an upstream error body, whatever its shape: redacted, then cut (so
    a cut never keeps the first half of a key)."""
    text = body.decode("utf-8", "replace")
    try:
        message = _json_message(json.loads(text))
    except ValueError:
        message = None
    if message is None:
        message = _page_summary(text) if _HTML.match(text.lstrip()) else text
    return cut(plain(redactor.text(message))) or "(empty body)"
