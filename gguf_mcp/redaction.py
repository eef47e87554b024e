"""Masking secret values in everything that leaves the process: results, progress, errors, logs.

By value, not by name: a deployment that echoes the key back (in an error, in a completion) must
not hand it to the agent. Each secret is matched as written and in its base64 forms (what a
`Basic` header or an encoded echo carries). Text that arrives in pieces (streamed tokens) goes
through `StreamRedactor`, which holds back a tail that could be the start of a secret until the
next piece shows whether it is.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

MASK = "[redacted]"


class Redactor:
    """Replaces every form of every secret with `[redacted]`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            forms.add(secret)
            raw = secret.encode()
            for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
                forms.update((encoded, encoded.rstrip("=")))
        # Longest first, so a secret that contains another is masked whole.
        self._forms = sorted(forms, key=len, reverse=True)
        self._bytes = [form.encode() for form in self._forms]

    def __bool__(self) -> bool:
        return bool(self._forms)

    def text(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def clean(self, raw_json: str | bytes) -> bool:
        """Whether nothing decoded from `raw_json` can hold a secret: no form of one in it, and no
        escape sequence that could spell one (a cheap scan that spares most answers the walk below)."""
        if isinstance(raw_json, bytes):
            return b"\\" not in raw_json and not any(form in raw_json for form in self._bytes)
        return "\\" not in raw_json and not any(form in raw_json for form in self._forms)

    def data(self, value: Any) -> Any:
        """A decoded JSON value with every string in it (keys included) masked."""
        if not self._forms:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.data(item) for item in value]
        if isinstance(value, dict):
            return {self.text(k) if isinstance(k, str) else k: self.data(v) for k, v in value.items()}
        return value

    def held_back(self, text: str) -> int:
        """How many trailing characters of `text` could be the beginning of a secret."""
        longest = 0
        for form in self._forms:
            for size in range(min(len(form) - 1, len(text)), longest, -1):
                if text.endswith(form[:size]):
                    longest = size
                    break
        return longest

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)


class StreamRedactor:
    """Redacts text that arrives in pieces, so a secret split across pieces is masked too."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._pending = ""

    def feed(self, piece: str) -> str:
        """The text that is safe to pass on now; a possible secret's beginning waits for the next piece."""
        if not self._redactor:
            return piece
        text = self._redactor.text(self._pending + piece)
        keep = self._redactor.held_back(text)
        self._pending = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep] if keep else text

    def flush(self) -> str:
        """What was held back, once no more pieces will come."""
        rest, self._pending = self._pending, ""
        return rest


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every form of each secret masked."""
    return Redactor(secrets).text(text)
