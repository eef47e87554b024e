"""Masking secret values in everything that leaves the process: results, progress, errors, logs.

By value, not by name: a deployment that echoes the key back (in an error, in a completion) must
not hand it to the agent. Each secret is matched as written, in its base64 forms (what a
`Basic` header or an encoded echo carries), and whatever its case: a URL parser lowercases a
host, so a key in a redirect's host comes back lowercased. Text that arrives in pieces (streamed
tokens) goes through `StreamRedactor`, which holds back a tail that could be the start of a
secret until the next piece shows whether it is.
"""

from __future__ import annotations

import base64
import re
import string
from collections.abc import Iterable
from typing import Any

MASK = "[redacted]"

# ASCII letters match in either case (re.ASCII | re.IGNORECASE); this table folds them the same
# way, one character for one, so `held_back` sees exactly what the pattern would match.
_FOLD = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _forms(secret: str) -> set[str]:
    """The secret and its base64 forms, ASCII-folded; a non-ASCII secret's own case folds too."""
    raw = secret.encode()
    forms = {secret, secret.lower(), secret.upper(), secret.casefold()}
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        forms.update((encoded, encoded.rstrip("=")))
    return {form.translate(_FOLD) for form in forms}


class Redactor:
    """Replaces every form of every secret with `[redacted]`, whatever its case."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            forms |= _forms(secret) if secret else set()
        # Longest first: the pattern takes the first alternative that matches, so a secret that
        # contains another (or a padded base64 form, its unpadded one) is masked whole.
        self._forms = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, self._forms)), re.ASCII | re.IGNORECASE)
        self._casefolded = [form.casefold() for form in self._forms]
        self._bytes = [form.encode().lower() for form in self._forms]
        self._reach = max(map(len, self._forms), default=1) - 1
        self._firsts = frozenset(form[0] for form in self._forms)

    def __bool__(self) -> bool:
        return bool(self._forms)

    def text(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._may_hold(text) else text

    def _may_hold(self, text: str) -> bool:
        # casefold() is context-free, so a match in `text` is a match in its casefold: a cheap
        # scan spares the pattern most texts.
        folded = text.casefold()
        return any(form in folded for form in self._casefolded)

    def masked_up_to(self, text: str, limit: int) -> tuple[str, int]:
        """`text` masked up to `limit`, and where that stopped: past `limit` when a match begun
        before it runs on (the rest is masked as `text` would mask it, whatever comes next)."""
        if not self._may_hold(text):
            return text[:limit], limit
        shown: list[str] = []
        end = 0
        for match in self._pattern.finditer(text):
            if match.start() >= limit:
                break
            shown += (text[end : match.start()], MASK)
            end = match.end()
        stop = max(end, limit)
        shown.append(text[end:stop])
        return "".join(shown), stop

    def clean(self, raw_json: str | bytes) -> bool:
        """Whether nothing decoded from `raw_json` can hold a secret: no form of one in it, and no
        escape sequence that could spell one (a cheap scan that spares most answers the walk below)."""
        if isinstance(raw_json, bytes):
            folded_bytes = raw_json.lower()
            return b"\\" not in raw_json and not any(form in folded_bytes for form in self._bytes)
        folded = raw_json.casefold()
        return "\\" not in raw_json and not any(form in folded for form in self._casefolded)

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
        tail = text[max(0, len(text) - self._reach) :].translate(_FOLD)
        for start in range(len(tail)):
            if tail[start] not in self._firsts:
                continue
            rest = tail[start:]
            if any(len(form) > len(rest) and form.startswith(rest) for form in self._forms):
                return len(rest)
        return 0

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)


class StreamRedactor:
    """Redacts text that arrives in pieces: what it passes on, joined, is exactly what `Redactor.text`
    makes of the whole, so a secret split across pieces is masked too."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._pending = ""

    def feed(self, piece: str) -> str:
        """The text that is safe to pass on now. A tail that could begin a secret waits, unmasked, for
        the next piece: masked now, a shorter form (an unpadded base64, a key inside a longer one)
        could match where the whole would mask a longer one."""
        if not self._redactor:
            return piece
        text = self._pending + piece
        shown, stop = self._redactor.masked_up_to(text, len(text) - self._redactor.held_back(text))
        self._pending = text[stop:]
        return shown

    def flush(self) -> str:
        """What was held back, masked, once no more pieces will come."""
        rest, self._pending = self._pending, ""
        return self._redactor.text(rest)
