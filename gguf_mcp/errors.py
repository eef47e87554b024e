"""Every failure gguf-mcp reports, and the one place that maps HTTP outcomes to them.

Each error carries the text the agent (and the user behind it) reads: what happened and what
to do. Tools raise these; nothing else formats an error message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Literal

TransportFailure = Literal["connect timeout", "connect", "certificate", "read timeout", "dropped"]
"""How a request failed without a usable response (the HTTP client's exception, classified)."""

_SNIPPET = 300


class GGUFMCPError(Exception):
    """Base of every error gguf-mcp reports on purpose."""


class ConfigError(GGUFMCPError):
    """A setting is missing or malformed; the message names the setting and the fix."""


class UnknownDeployment(GGUFMCPError):
    """A tool call named a deployment that is not configured."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        valid = ", ".join(known)
        super().__init__(f"Unknown deployment {name!r}. Configured deployments: {valid}.")


class UpstreamError(GGUFMCPError):
    """A request to a deployment failed; `retryable` says whether waiting can heal it."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.attempts = 1

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} (gave up after {self.attempts} attempts)" if self.attempts > 1 else text


class AuthenticationFailed(UpstreamError):
    """401/403: the deployment rejected the API key."""


class DeploymentNotFound(UpstreamError):
    """404: no such deployment for this account, or a base URL that is not a deployment."""


class DeploymentNotReady(UpstreamError):
    """503: the deployment exists but is starting or stopped."""

    retryable = True


class DeploymentUnreachable(UpstreamError):
    """502/504: the deployment is marked ready but its server does not answer (restarting)."""

    retryable = True


class RateLimited(UpstreamError):
    """429: too many requests."""

    retryable = True


class NotSupported(UpstreamError):
    """501: the deployment's server does not offer this route (e.g. embeddings)."""


class RequestRejected(UpstreamError):
    """Another 4xx: the deployment refused the request; its own message says why."""


class UpstreamServerError(UpstreamError):
    """Another 5xx: the deployment's server failed on this request."""


class UpstreamTimeout(UpstreamError):
    """No answer within the read time-out."""


class ConnectionFailed(UpstreamError):
    """The deployment could not be reached at all (refused, DNS, TLS, reset before a response)."""

    retryable = True


class CertificateRejected(UpstreamError):
    """The deployment's TLS certificate did not verify: waiting will not change that."""


class StreamInterrupted(UpstreamError):
    """A streamed answer broke, stalled or ended before its final event."""


class InvalidResponse(UpstreamError):
    """The deployment answered 2xx with a body that is not the JSON its protocol promises."""


class ResponseTooLarge(InvalidResponse):
    """The answer (or one streamed event) exceeded the size gguf-mcp is willing to read."""


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret value in `text` (by value, not by name)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def upstream_message(body: bytes) -> str:
    """The human message inside an upstream error body, whatever its shape, else a snippet."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail")
            if isinstance(msg, str) and msg:
                return msg[:_SNIPPET]
        elif isinstance(err, str) and err:
            return err[:_SNIPPET]
        detail = data.get("detail") or data.get("message")
        if isinstance(detail, str) and detail:
            return detail[:_SNIPPET]
    text = " ".join(body.decode("utf-8", "replace").split())
    return text[:_SNIPPET] or "(empty body)"


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date; rare on APIs, and the backoff still applies
    return max(seconds, 0.0)


def error_for_status(
    deployment: str, key_env: str, status: int, body: bytes, retry_after: str | None, secrets: Iterable[str]
) -> UpstreamError:
    """Map an HTTP error status from deployment `deployment` to the error the agent reads."""
    detail = redact(upstream_message(body), secrets)
    where = f"Deployment {deployment!r}"
    cls: type[UpstreamError]
    if status in (401, 403):
        cls, text = (
            AuthenticationFailed,
            (
                f"{where} rejected the API key (HTTP {status}: {detail}). Check {key_env}: it must be a "
                "valid key of the account that owns the deployment."
            ),
        )
    elif status == 404 and detail == "File Not Found":
        # llama-server's own 404: the deployment answered, but has no such route.
        cls, text = (
            NotSupported,
            f"{where} answered but has no such route (HTTP 404: {detail}). Its llama-server may be too old for "
            "this API, or the base URL points below the deployment's root.",
        )
    elif status == 404:
        cls, text = (
            DeploymentNotFound,
            (
                f"{where} was not found (HTTP 404: {detail}). Check its deployment id or base URL, and that "
                f"it belongs to the account of {key_env}."
            ),
        )
    elif status == 429:
        cls, text = RateLimited, f"{where} is rate limiting requests (HTTP 429: {detail}). Wait, then retry."
    elif status == 501:
        cls, text = NotSupported, f"{where} does not support this request (HTTP 501: {detail})."
    elif status == 503:
        cls, text = (
            DeploymentNotReady,
            (
                f"{where} is not ready (HTTP 503: {detail}). It may be starting or stopped: start it in the "
                "GGUF Cloud dashboard or try again in a minute."
            ),
        )
    elif status in (502, 504):
        cls, text = (
            DeploymentUnreachable,
            (
                f"{where} is not answering (HTTP {status}: {detail}). It may be restarting or warming up: "
                "try again in a minute."
            ),
        )
    elif 400 <= status < 500:
        cls, text = RequestRejected, f"{where} rejected the request (HTTP {status}): {detail}"
    else:
        cls, text = UpstreamServerError, f"{where} failed (HTTP {status}): {detail}"
    wait = _retry_after(retry_after)
    if wait is not None and cls in (RateLimited, DeploymentNotReady, DeploymentUnreachable):
        text += f" It asks to wait {wait:g} s before retrying."
    return cls(text, status=status, retry_after=wait)


def error_for_transport(
    deployment: str, url: str, failure: TransportFailure, detail: str, timeout: float
) -> UpstreamError:
    """Map a transport failure (no usable response) to the error the agent reads."""
    where = f"Deployment {deployment!r} ({url})"
    if failure == "connect timeout":
        return ConnectionFailed(f"{where} could not be reached: connection timed out. Check the URL and network.")
    if failure == "read timeout":
        return UpstreamTimeout(
            f"{where} sent nothing for {timeout:g} s (read time-out). Raise GGUF_MCP_TIMEOUT for long "
            "generations, or lower max_tokens."
        )
    if failure == "certificate":
        return CertificateRejected(
            f"{where} presented a TLS certificate that did not verify ({detail}). If it is signed by a private "
            "CA, set SSL_CERT_FILE to that CA's bundle (PEM)."
        )
    if failure == "connect":
        return ConnectionFailed(
            f"{where} could not be reached ({detail}). Check the URL and that the server is running."
        )
    return ConnectionFailed(f"{where} dropped the connection ({detail}). Try again.")


def invalid_response(
    deployment: str, what: str, body: bytes, content_type: str | None, secrets: Iterable[str]
) -> InvalidResponse:
    """A 2xx whose body is not what the protocol promises (e.g. an HTML page from a proxy)."""
    snippet = redact(" ".join(body[:120].decode("utf-8", "replace").split()), secrets)
    return InvalidResponse(
        f"Deployment {deployment!r} returned {what} (content-type {content_type or 'none'}, "
        f"{len(body)} bytes, starting {snippet!r}). Check that the base URL points at a llama-server "
        "or GGUF Cloud deployment, not at a web page or proxy."
    )


def stream_broken(deployment: str, failure: TransportFailure | None, detail: str, timeout: float) -> StreamInterrupted:
    """A stream that stalled past the read time-out, broke, or ended without its final event."""
    where = f"The answer from deployment {deployment!r}"
    if failure == "read timeout":
        return StreamInterrupted(
            f"{where} stalled: nothing arrived for {timeout:g} s (read time-out). Raise GGUF_MCP_TIMEOUT if "
            "the model is slow, or try again."
        )
    if failure is not None:
        return StreamInterrupted(f"{where} broke off mid-stream ({detail}). Try again.")
    return StreamInterrupted(f"{where} ended before its final event (the connection closed early). Try again.")


def stream_error(deployment: str, data: dict[str, object], secrets: Iterable[str]) -> UpstreamServerError:
    """An error event inside a stream (e.g. llama-server failing mid-generation)."""
    detail = redact(upstream_message(json.dumps(data).encode()), secrets).rstrip(".")
    return UpstreamServerError(f"Deployment {deployment!r} failed mid-answer: {detail}. Try again.")


def too_large(deployment: str, limit: int, what: str) -> ResponseTooLarge:
    return ResponseTooLarge(
        f"Deployment {deployment!r} sent {what} larger than {limit // (1024 * 1024) or 1} MiB; gguf-mcp stopped "
        "reading it. Check that the base URL points at a llama-server, or ask for less (max_tokens, fewer inputs)."
    )
