"""The error family: every failure gguf-mcp reports on purpose, each class with a short `label`.

Each class's docstring says when it happens; `label` is the short, secret-free name `/readyz`,
`doctor`, metrics and the audit trail show. `error_text` is the one place an error becomes text
someone reads (a tool error, the `error` of list_models and the resources): redacted, then bounded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Literal

from gguf_mcp.bodies import cut, plain
from gguf_mcp.redaction import Redactor

TransportFailure = Literal[
    "connect timeout",
    "connect",
    "certificate",
    "not tls",
    "read timeout",
    "pool timeout",
    "proxy",
    "dropped",
    "not http",
]
"""How a request failed without a usable response (the HTTP client's exception, classified)."""

MAX_ERROR_TEXT = 20_000  # what any error shows at most; the parts that can be long are cut first, with a note
MAX_PARTIAL = 16_000  # of a broken stream's partial output
MAX_NAME = 80  # of a deployment name the caller sent


class GGUFMCPError(Exception):
    """Base of every error gguf-mcp reports on purpose; a subclass names its `label` and whether
    waiting can heal it in its class line (`class RateLimited(UpstreamError, label=..., retryable=True)`)."""

    label: ClassVar[str] = "error"
    retryable: ClassVar[bool] = False

    def __init_subclass__(cls, label: str | None = None, retryable: bool | None = None) -> None:
        super().__init_subclass__()
        if label is not None:
            cls.label = label
        if retryable is not None:
            cls.retryable = retryable


class ConfigError(GGUFMCPError, label="configuration"):
    """A setting is missing or malformed; the message names the setting and the fix."""


class UnknownDeployment(GGUFMCPError, label="unknown deployment"):
    """A tool call named a deployment that is not configured."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(f"Unknown deployment {cut(name, MAX_NAME)!r}. Configured deployments: {', '.join(known)}.")


class UpstreamError(GGUFMCPError):
    """A request to a deployment failed; `retryable` says whether waiting can heal it."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.attempts = 1

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} (gave up after {self.attempts} attempts)" if self.attempts > 1 else text


class AuthenticationFailed(UpstreamError, label="key rejected"):
    """401/403: the deployment rejected the API key, or got none."""


class KeyMissing(AuthenticationFailed, label="key missing"):
    """401/403 while no key is set for the deployment: it needs one."""


class DeploymentNotFound(UpstreamError, label="not found"):
    """404 from the gateway: no such deployment for this account, or a base URL that is not one."""


class Redirected(UpstreamError, label="redirected"):
    """3xx: the base URL answers with a redirect, which gguf-mcp never follows (it would carry the key)."""


class DeploymentNotReady(UpstreamError, label="not ready", retryable=True):
    """503: the deployment exists but is starting or stopped."""


class DeploymentUnreachable(UpstreamError, label="not answering", retryable=True):
    """502/504: the deployment is marked ready but its server does not answer (restarting)."""


class RateLimited(UpstreamError, label="rate limited", retryable=True):
    """429: too many requests."""


class NotSupported(UpstreamError, label="not supported"):
    """501, or llama-server's own 404: the deployment's server does not offer this route."""


class RequestRejected(UpstreamError, label="request rejected"):
    """Another 4xx: the deployment refused the request; its own message says why."""


class UpstreamServerError(UpstreamError, label="server error"):
    """Another 5xx, or an error event mid-stream: the deployment's server failed on this request."""


class UpstreamTimeout(UpstreamError, label="timed out"):
    """No answer within the read time-out."""


class ConnectionFailed(UpstreamError, label="unreachable", retryable=True):
    """The deployment could not be reached (refused, DNS, reset before a response)."""


class CertificateRejected(UpstreamError, label="certificate rejected"):
    """The deployment's TLS certificate did not verify: waiting will not change that."""


class NotTLS(UpstreamError, label="not TLS"):
    """An https:// base URL whose server answered in plain HTTP."""


class ProxyFailed(UpstreamError, label="proxy failed"):
    """The proxy from the environment (HTTPS_PROXY, ...) refused or failed the request."""


class UpstreamBusy(UpstreamError, label="saturated"):
    """Every connection to the deployments stayed in use for the whole wait (GGUF_MCP_UPSTREAM_CONNECTIONS)."""


class StreamInterrupted(UpstreamError, label="stream broken"):
    """A streamed answer broke, stalled or ended before its final event."""


class InvalidResponse(UpstreamError, label="invalid response"):
    """The deployment answered with something its protocol does not allow: a 2xx body of the wrong
    shape, or bytes that are not HTTP at all. Never retried: the same request gets the same answer."""


class ResponseTooLarge(InvalidResponse, label="too large"):
    """The answer (or one streamed event) exceeded the size gguf-mcp is willing to read."""


class ClientLimitReached(GGUFMCPError, label="limit reached"):
    """A client's own limit (`[clients.<name>]`) refused the call before anything was sent."""

    def __init__(self, message: str, *, limit: str, value: int, resets_at: float | None = None) -> None:
        super().__init__(message)
        self.limit, self.value, self.resets_at = limit, value, resets_at


class NotAllowed(GGUFMCPError, label="not allowed"):
    """The caller's policy (its scopes, or its table's `tools` or `deployments`) refused the call
    before anything was sent."""


def secret_flag_refused(flag: str, env: str, file_flag: str) -> ConfigError:
    """A secret given as a flag (visible in process listings); the message never echoes it."""
    return ConfigError(
        f"{flag} is not accepted (flags show in process listings). Set {env} in the environment, or use "
        f"{file_flag} PATH."
    )


def report_config_error(error: ConfigError) -> str:
    """The one line a configuration error prints on stderr (CLI and app factory alike)."""
    return f"gguf-mcp: configuration error: {plain(str(error))}"


def error_text(error: GGUFMCPError | str, redactor: Redactor) -> str:
    """An error as anyone outside reads it (a tool error, the `error` of list_models and the resources):
    the one boundary, redacted last and whatever the case (a URL parser lowercases a host), then bounded."""
    return cut(redactor.text(str(error)), MAX_ERROR_TEXT)
