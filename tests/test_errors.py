"""Error mapping: every status and transport failure becomes one actionable, secret-free text."""

from __future__ import annotations

import json

import pytest

from gguf_mcp import errors
from gguf_mcp.bodies import plain, upstream_message
from gguf_mcp.errors import error_for_status, error_for_transport
from gguf_mcp.redaction import Redactor
from gguf_mcp.upstream import RetryPolicy

KEY = "sk-canary-errors-5550123"
REDACTOR = Redactor([KEY])


def gateway_body(kind: str, message: str) -> bytes:
    return json.dumps({"error": {"type": kind, "message": message}}).encode()


def status_error(status: int, body: bytes = b"", retry_after: float | None = None) -> errors.UpstreamError:
    return error_for_status("prod", "MODELSLAB_API_KEY", status, body, retry_after, REDACTOR)


@pytest.mark.parametrize(
    ("status", "cls", "retryable", "advice"),
    [
        (401, errors.AuthenticationFailed, False, "Check MODELSLAB_API_KEY"),
        (403, errors.AuthenticationFailed, False, "Check MODELSLAB_API_KEY"),
        (404, errors.DeploymentNotFound, False, "Check its deployment id"),
        (429, errors.RateLimited, True, "Wait"),
        (501, errors.NotSupported, False, "does not support"),
        (503, errors.DeploymentNotReady, True, "start it"),
        (502, errors.DeploymentUnreachable, True, "restarting"),
        (504, errors.DeploymentUnreachable, True, "restarting"),
        (400, errors.RequestRejected, False, "rejected the request"),
        (422, errors.RequestRejected, False, "rejected the request"),
        (500, errors.UpstreamServerError, False, "failed (HTTP 500)"),
    ],
)
def test_each_status_maps_to_its_error(
    status: int, cls: type[errors.UpstreamError], retryable: bool, advice: str
) -> None:
    err = status_error(status, gateway_body("x", "upstream says why"))
    assert type(err) is cls
    assert err.retryable is retryable
    assert err.status == status
    text = str(err)
    assert advice in text and "'prod'" in text and "upstream says why" in text


def test_llama_server_message_is_passed_through_for_4xx() -> None:
    body = json.dumps(
        {
            "error": {
                "code": 400,
                "message": "request (5019 tokens) exceeds the available context size",
                "type": "exceed_context_size_error",
            }
        }
    ).encode()
    assert "exceeds the available context size" in str(status_error(400, body))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error":{"message":"m1"}}', "m1"),
        (b'{"error":"m2"}', "m2"),
        (b'{"detail":"m3"}', "m3"),
        (b'{"message":"m4"}', "m4"),
        (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "an HTML page: 502 Bad Gateway"),
        (b"", "(empty body)"),
    ],
)
def test_upstream_message_reads_every_common_shape(body: bytes, message: str) -> None:
    assert upstream_message(body, REDACTOR) == message


def test_an_upstream_body_echoing_the_key_is_redacted() -> None:
    err = status_error(401, gateway_body("authentication_error", f"Invalid API key {KEY}"))
    assert KEY not in str(err)
    assert "[redacted]" in str(err)


@pytest.mark.parametrize(
    ("failure", "cls", "needle"),
    [
        ("connect", errors.ConnectionFailed, "could not be reached"),
        ("connect timeout", errors.ConnectionFailed, "connection timed out"),
        ("read timeout", errors.UpstreamTimeout, "GGUF_MCP_TIMEOUT"),
        ("dropped", errors.ConnectionFailed, "dropped the connection"),
    ],
)
def test_transport_failures_map_to_actionable_errors(
    failure: errors.TransportFailure, cls: type[errors.UpstreamError], needle: str
) -> None:
    err = error_for_transport("prod", "http://127.0.0.1:1", failure, "SomeError: detail", 600)
    assert type(err) is cls
    assert needle in str(err)


def test_only_healing_failures_are_retryable() -> None:
    assert errors.ConnectionFailed("x").retryable
    assert not errors.UpstreamTimeout("x").retryable  # the generation may still be running


def test_attempts_are_reported_once_retries_gave_up() -> None:
    err = status_error(503)
    err.attempts = 4
    assert str(err).endswith("(gave up after 4 attempts)")


# --- the retry policy ---------------------------------------------------------------------------


def test_retry_policy_stops_after_max_retries() -> None:
    policy = RetryPolicy(max_retries=2)
    err = status_error(503)
    assert policy.delay(0, err, 0) is not None
    assert policy.delay(1, err, 0) is not None
    assert policy.delay(2, err, 0) is None


@pytest.mark.parametrize("status", [400, 401, 404, 500, 501])
def test_retry_policy_never_retries_deterministic_failures(status: int) -> None:
    assert RetryPolicy(max_retries=5).delay(0, status_error(status), 0) is None


def test_backoff_has_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(max_retries=10, base_delay=0.5, max_delay=10)
    waits = [policy.delay(3, status_error(502), 0) for _ in range(200)]
    assert all(w is not None and 0 <= w <= 4.0 for w in waits)
    assert len({round(w or 0, 3) for w in waits}) > 100


def test_retry_after_is_honoured_and_a_longer_wait_is_reported_at_once() -> None:
    policy = RetryPolicy(max_retries=3, max_delay=10)
    assert policy.delay(0, status_error(429, retry_after=3), 0) == pytest.approx(3, abs=0.5)
    long_wait = status_error(429, retry_after=3600)
    assert policy.delay(0, long_wait, 0) is None
    assert "It asks to wait 3600 s before retrying." in str(long_wait)


def test_total_retry_time_is_bounded() -> None:
    policy = RetryPolicy(max_retries=10, max_total=5)
    assert policy.delay(0, status_error(503, retry_after=4), elapsed=2) is None


def test_llama_servers_own_404_means_a_missing_route_not_a_missing_deployment() -> None:
    body = b'{"error":{"message":"File Not Found","type":"not_found_error","code":404}}'
    err = status_error(404, body)
    assert isinstance(err, errors.NotSupported)
    assert "has no such route" in str(err)
    assert not err.retryable


# --- The one boundary: what anyone outside reads -------------------------------------------------


def test_error_text_masks_the_key_however_a_parser_cased_it() -> None:
    redactor = Redactor(["sk-Canary-Errors-77AB"])
    redirect = errors.redirected("prod", "http://a.test", 307, "http://SK-CANARY-ERRORS-77AB.evil.test/", Redactor([]))
    assert "sk-canary-errors-77ab.evil.test" in str(redirect), "the parser lowercased the host"
    assert "a redirect to http://[redacted].evil.test" in errors.error_text(redirect, redactor)
    unknown = errors.UnknownDeployment("SK-canary-ERRORS-77ab", ["prod"])
    assert "77ab" not in errors.error_text(unknown, redactor).lower()


def test_error_text_is_bounded() -> None:
    huge = errors.UpstreamServerError("x" * 1_000_000)
    assert len(errors.error_text(huge, Redactor([]))) == errors.MAX_ERROR_TEXT


def test_an_unknown_deployment_name_is_cut() -> None:
    text = str(errors.UnknownDeployment("n" * 100_000, ["prod", "dev"]))
    assert len(text) < 200 and text.endswith("Configured deployments: prod, dev.")


def test_a_broken_streams_partial_output_is_kept_whole_when_short_and_cut_with_a_note_when_long() -> None:
    assert errors.stream_failed_with_partial("Broke.", 3, "abc") == "Broke. Partial output (3 tokens): abc"
    long = errors.stream_failed_with_partial("Broke.", 9, "y" * (errors.MAX_PARTIAL + 5000))
    assert len(long) < errors.MAX_PARTIAL + 400
    assert f"{errors.MAX_PARTIAL + 5000} characters" in long and "the other 5000 are not kept" in long
    assert "max_tokens" in long and "deadline" in long


def test_an_answer_that_is_not_http_names_what_the_parser_refused_and_says_it_was_not_resent() -> None:
    err = error_for_transport("prod", "http://127.0.0.1:1", "not http", "illegal header line", 600)
    assert isinstance(err, errors.InvalidResponse) and not err.retryable
    assert "not valid HTTP (illegal header line)" in str(err) and "did not send the request again" in str(err)


def test_plain_drops_terminal_sequences_and_control_characters() -> None:
    hostile = "\x1b[2J\x1b]0;title\x07a\nb\r\x9b31mc\x1b]8;;http://x\x1b\\d\x1b]8;;\x1b\\\x00"
    assert plain(hostile) == "a b c d"
