"""Redaction, unit by unit: every form of a secret is masked whole, wherever it sits, whatever its
case, and however a stream splits it.

The forms are written out here, independently of the code: the secret as written, lowercased and
uppercased (a URL parser lowercases a host), and its base64 and URL-safe base64 encodings, padded
and unpadded. Secrets are drawn from what keys and tokens are made of; the text around them from
characters no form contains, so the one right answer is known.
"""

from __future__ import annotations

import base64
import itertools
import string

from hypothesis import example, given
from hypothesis import strategies as st

from gguf_mcp.redaction import MASK, Redactor

KEYS = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=4, max_size=40)
AROUND = st.text(alphabet=" .,;:!?()*#\n\t", max_size=8)
"""Text no form can begin, end or continue in (not a letter, digit, '-', '_', '+', '/' or '=')."""


def forms_of(secret: str) -> list[str]:
    raw = secret.encode()
    padded = base64.b64encode(raw).decode()
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    return [secret, secret.lower(), secret.upper(), padded, padded.rstrip("="), urlsafe, urlsafe.rstrip("=")]


def streamed(redactor: Redactor, pieces: list[str]) -> tuple[str, list[str]]:
    """What a StreamRedactor passes on for `pieces`: joined, and as it was after each piece."""
    stream = redactor.stream()
    shown: list[str] = []
    progress = []
    for piece in pieces:
        shown.append(stream.feed(piece))
        progress.append("".join(shown))
    shown.append(stream.flush())
    return "".join(shown), progress


def split(text: str, points: list[int]) -> list[str]:
    bounds = [0, *sorted(set(points)), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def holds_a_form(text: str, secret: str) -> bool:
    folded = text.replace(MASK, "\0").lower()
    return any(form.lower() in folded for form in forms_of(secret))


# --- Whole texts -----------------------------------------------------------------------------------


@given(KEYS, AROUND, AROUND)
@example("sk-Canary-7f3a", "Location: http://", ".evil.test/")
@example("abcd", "", "")  # base64 "YWJjZA==": an unpadded match first would leave "=="
def test_every_form_is_masked_whole_wherever_it_sits(secret: str, before: str, after: str) -> None:
    redactor = Redactor([secret])
    for form in forms_of(secret):
        assert redactor.text(before + form + after) == before + MASK + after, form


@given(KEYS, KEYS, KEYS, AROUND)
def test_a_secret_inside_another_is_masked_as_the_longer_one(inner: str, head: str, tail: str, around: str) -> None:
    outer = head + inner + tail
    redactor = Redactor([inner, outer])
    assert redactor.text(around + outer + around) == around + MASK + around


def test_a_redirect_host_lowercased_by_the_url_parser_is_masked() -> None:
    redactor = Redactor(["sk-Canary-7F3A9c1e"])
    assert (
        redactor.text("a redirect to http://sk-canary-7f3a9c1e.evil.test") == f"a redirect to http://{MASK}.evil.test"
    )


@given(KEYS)
def test_a_json_body_holding_any_form_in_any_case_is_not_clean(secret: str) -> None:
    redactor = Redactor([secret])
    for form in forms_of(secret):
        for spelled in (form, form.swapcase()):
            assert not redactor.clean(f'{{"echo": "{spelled}"}}')
            assert not redactor.clean(f'{{"echo": "{spelled}"}}'.encode())
    assert redactor.clean('{"choices": []}')


# --- Streams -----------------------------------------------------------------------------------------


@given(KEYS, AROUND, AROUND)
@example("sk-canary-7f3a9c1e", "key: ", "")
def test_a_form_split_at_any_one_point_never_shows(secret: str, before: str, after: str) -> None:
    redactor = Redactor([secret])
    for form in forms_of(secret):
        whole = before + form + after
        for point in range(1, len(whole)):
            joined, progress = streamed(redactor, [whole[:point], whole[point:]])
            assert joined == redactor.text(whole) == before + MASK + after, (form, point)
            for seen in progress:
                assert not holds_a_form(seen, secret), (form, point, seen)
                # Nothing of the form is shown before it could be told apart: no prefix of it ends the text.
                assert not any(seen.endswith(form[:n]) for n in range(1, len(form))), (form, point, seen)


@given(KEYS, AROUND, AROUND, st.data())
def test_a_form_split_into_many_pieces_never_shows(secret: str, before: str, after: str, data: st.DataObject) -> None:
    redactor = Redactor([secret])
    for form in forms_of(secret):
        whole = before + form + after
        points = data.draw(st.lists(st.integers(1, max(1, len(whole) - 1)), min_size=1, max_size=len(whole)))
        joined, progress = streamed(redactor, split(whole, points))
        assert joined == redactor.text(whole) == before + MASK + after, (form, points)
        assert not any(holds_a_form(seen, secret) for seen in progress), (form, points)


@given(st.lists(KEYS, min_size=1, max_size=3), st.text(max_size=60), st.data())
def test_any_text_streamed_in_any_pieces_joins_to_the_redacted_whole(
    secrets: list[str], filler: str, data: st.DataObject
) -> None:
    """Text of any characters, secrets placed anywhere in it: a stream shows what a whole text shows."""
    redactor = Redactor(secrets)
    parts = data.draw(
        st.lists(st.one_of(st.sampled_from([f for s in secrets for f in forms_of(s)]), st.text()), max_size=6)
    )
    whole = filler.join(parts)
    points = data.draw(st.lists(st.integers(0, len(whole)), max_size=8))
    joined, _ = streamed(redactor, split(whole, points))
    assert joined == redactor.text(whole)


def test_without_secrets_a_stream_passes_everything_through_at_once() -> None:
    stream = Redactor([]).stream()
    assert stream.feed("sk-") == "sk-"
    assert stream.flush() == ""
