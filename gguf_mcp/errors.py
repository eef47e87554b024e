"""Every failure gguf-mcp reports, each with the text the user reads and a short `label`.

One family: configuration, deployment answers (by HTTP status), transport failures, broken
streams and bad answers. Each message says what happened and what to do; each class's `label`
is the short, secret-free name `/readyz` and `doctor` show. The functions at the end are the
one place that maps an HTTP outcome to its error. Nothing else writes an error message.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from typing import Literal
from urllib.parse import urlsplit

from gguf_mcp.redaction import redact

TransportFailure = Literal[
    "connect timeout", "connect", "certificate", "not tls", "read timeout", "pool timeout", "proxy", "dropped"
]
"""How a request failed without a usable response (the HTTP client's exception, classified)."""

SNIPPET = 300
"""The most characters of an upstream's own words an error quotes."""


class GGUFMCPError(Exception):
    """Base of every error gguf-mcp reports on purpose."""

    label = "error"


class ConfigError(GGUFMCPError):
    """A setting is missing or malformed; the message names the setting and the fix."""

    label = "configuration"


class UnknownDeployment(GGUFMCPError):
    """A tool call named a deployment that is not configured."""

    label = "unknown deployment"

    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(f"Unknown deployment {name!r}. Configured deployments: {', '.join(known)}.")


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
    """401/403: the deployment rejected the API key, or got none."""

    label = "key rejected"


class KeyMissing(AuthenticationFailed):
    """401/403 while no key is set for the deployment: it needs one."""

    label = "key missing"


class DeploymentNotFound(UpstreamError):
    """404 from the gateway: no such deployment for this account, or a base URL that is not one."""

    label = "not found"


class Redirected(UpstreamError):
    """3xx: the base URL answers with a redirect, which gguf-mcp never follows (it would carry the key)."""

    label = "redirected"


class DeploymentNotReady(UpstreamError):
    """503: the deployment exists but is starting or stopped."""

    label = "not ready"
    retryable = True


class DeploymentUnreachable(UpstreamError):
    """502/504: the deployment is marked ready but its server does not answer (restarting)."""

    label = "not answering"
    retryable = True


class RateLimited(UpstreamError):
    """429: too many requests."""

    label = "rate limited"
    retryable = True


class NotSupported(UpstreamError):
    """501, or llama-server's own 404: the deployment's server does not offer this route."""

    label = "not supported"


class RequestRejected(UpstreamError):
    """Another 4xx: the deployment refused the request; its own message says why."""

    label = "request rejected"


class UpstreamServerError(UpstreamError):
    """Another 5xx, or an error event mid-stream: the deployment's server failed on this request."""

    label = "server error"


class UpstreamTimeout(UpstreamError):
    """No answer within the read time-out."""

    label = "timed out"


class ConnectionFailed(UpstreamError):
    """The deployment could not be reached (refused, DNS, reset before a response)."""

    label = "unreachable"
    retryable = True


class CertificateRejected(UpstreamError):
    """The deployment's TLS certificate did not verify: waiting will not change that."""

    label = "certificate rejected"


class NotTLS(UpstreamError):
    """An https:// base URL whose server answered in plain HTTP."""

    label = "not TLS"


class ProxyFailed(UpstreamError):
    """The proxy from the environment (HTTPS_PROXY, ...) refused or failed the request."""

    label = "proxy failed"


class UpstreamBusy(UpstreamError):
    """Every connection to the deployments stayed in use for the whole wait (GGUF_MCP_UPSTREAM_CONNECTIONS)."""

    label = "saturated"


class StreamInterrupted(UpstreamError):
    """A streamed answer broke, stalled or ended before its final event."""

    label = "stream broken"


class InvalidResponse(UpstreamError):
    """The deployment answered 2xx with a body that is not what its protocol promises."""

    label = "invalid response"


class ResponseTooLarge(InvalidResponse):
    """The answer (or one streamed event) exceeded the size gguf-mcp is willing to read."""

    label = "too large"


# --- Reading what an upstream said ---------------------------------------------------------------

_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)


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
    if isinstance(err, str) and err:
        return err
    for found in ((err.get("message") or err.get("detail")) if isinstance(err, dict) else None,
                  data.get("detail") or data.get("message")):  # fmt: skip
        if isinstance(found, str) and found:
            return found
    return None


def upstream_message(body: bytes, secrets: Iterable[str] = ()) -> str:
    """The human message inside an upstream error body, whatever its shape: redacted, then cut."""
    text = body.decode("utf-8", "replace")
    try:
        message = _json_message(json.loads(text))
    except ValueError:
        message = None
    if message is None:
        stripped = text.lstrip()
        looks_html = stripped[:1] == "<" and re.match(r"<(!doctype|html|head|body|\?xml|title)", stripped, re.I)
        message = _page_summary(text) if looks_html else text
    return cut(plain(redact(message, secrets))) or "(empty body)"


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date; rare on APIs, and the backoff still applies
    return max(seconds, 0.0) if seconds == seconds else None


# --- The mappings -------------------------------------------------------------------------------


def error_for_status(
    deployment: str,
    key_env: str,
    status: int,
    body: bytes,
    retry_after: str | None,
    secrets: Iterable[str],
    *,
    has_key: bool = True,
) -> UpstreamError:
    """Map an HTTP error status from deployment `deployment` to the error the agent reads."""
    detail = upstream_message(body, secrets)
    where = f"Deployment {deployment!r}"
    cls: type[UpstreamError]
    if status in (401, 403) and not has_key:
        cls, text = (
            KeyMissing,
            f"{where} asks for an API key (HTTP {status}: {detail}), and {key_env} is not set. Set it in the "
            "server's environment, or use --api-key-file.",
        )
    elif status in (401, 403):
        cls, text = (
            AuthenticationFailed,
            f"{where} rejected the API key (HTTP {status}: {detail}). Check {key_env}: it must be a valid key of "
            "the account that owns the deployment.",
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
            f"{where} was not found (HTTP 404: {detail}). Check its deployment id or base URL, and that it "
            f"belongs to the account of {key_env}.",
        )
    elif status == 429:
        cls, text = RateLimited, f"{where} is rate limiting requests (HTTP 429: {detail}). Wait, then retry."
    elif status == 501:
        cls, text = NotSupported, f"{where} does not support this request (HTTP 501: {detail})."
    elif status == 503:
        cls, text = (
            DeploymentNotReady,
            f"{where} is not ready (HTTP 503: {detail}). It may be starting or stopped: start it in the GGUF "
            "Cloud dashboard or try again in a minute.",
        )
    elif status in (502, 504):
        cls, text = (
            DeploymentUnreachable,
            f"{where} is not answering (HTTP {status}: {detail}). It may be restarting or warming up: try again "
            "in a minute.",
        )
    elif 400 <= status < 500:
        cls, text = RequestRejected, f"{where} rejected the request (HTTP {status}): {detail}"
    else:
        cls, text = UpstreamServerError, f"{where} failed (HTTP {status}): {detail}"
    wait = _retry_after(retry_after)
    if wait is not None and cls.retryable:
        text += f" It asks to wait {wait:g} s before retrying."
    return cls(text, status=status, retry_after=wait)


def redirected(deployment: str, base_url: str, status: int, location: str | None) -> Redirected:
    """A 3xx: name where it points (host only: a query string may hold anything) and the likely fix."""
    target = urlsplit(location or "")
    here = urlsplit(base_url)
    host = target.hostname or here.hostname or "?"
    where = f"{target.scheme or here.scheme}://{host}" + (f":{target.port}" if target.port else "")
    return Redirected(
        f"Deployment {deployment!r} ({base_url}) answered HTTP {status}, a redirect to {where}. gguf-mcp never "
        "follows redirects (they would carry the API key and the prompt elsewhere): the base URL is probably "
        "wrong; set it to where the deployment really is.",
        status=status,
    )


def error_for_transport(
    deployment: str, url: str, failure: TransportFailure, detail: str, timeout: float
) -> UpstreamError:
    """Map a transport failure (no usable response) to the error the agent reads."""
    where = f"Deployment {deployment!r} ({url})"
    detail = cut(plain(detail))
    if failure == "connect timeout":
        return ConnectionFailed(f"{where} could not be reached: connection timed out. Check the URL and network.")
    if failure == "read timeout":
        return UpstreamTimeout(
            f"{where} sent nothing for {timeout:g} s (read time-out). Raise GGUF_MCP_TIMEOUT for long "
            "generations, or lower max_tokens."
        )
    if failure == "pool timeout":
        return UpstreamBusy(
            f"{where}: every upstream connection stayed busy for {timeout:g} s, so this call never started. Too "
            "many generations are in flight: raise GGUF_MCP_UPSTREAM_CONNECTIONS, or try again later."
        )
    if failure == "certificate":
        return CertificateRejected(
            f"{where} presented a TLS certificate that did not verify ({detail}). If it is signed by a private "
            "CA, set SSL_CERT_FILE to that CA's bundle (PEM)."
        )
    if failure == "not tls":
        return NotTLS(
            f"{where} did not answer the TLS handshake ({detail}): the server may not speak TLS; try http:// "
            "instead of https://."
        )
    if failure == "proxy":
        return ProxyFailed(
            f"{where} could not be reached through the proxy set in the environment ({detail}). Check "
            "HTTPS_PROXY/HTTP_PROXY (and credentials in it), or add the deployment's host to NO_PROXY."
        )
    if failure == "connect":
        return ConnectionFailed(
            f"{where} could not be reached ({detail}). Check the URL and that the server is running."
        )
    return ConnectionFailed(f"{where} dropped the connection ({detail}). Try again.")


def unsupported_proxy(scheme: str) -> ConfigError:
    return ConfigError(
        f"The proxy set in the environment (HTTPS_PROXY, HTTP_PROXY or ALL_PROXY) uses {scheme}://, which gguf-mcp "
        "does not support. Use an http:// or https:// proxy, or add the deployment's host to NO_PROXY."
    )


def invalid_response(
    deployment: str, what: str, body: bytes, content_type: str | None, secrets: Iterable[str]
) -> InvalidResponse:
    """A 2xx whose body is not what the protocol promises (e.g. an HTML page from a proxy)."""
    snippet = upstream_message(body[:4096], secrets)
    return InvalidResponse(
        f"Deployment {deployment!r} returned {what} (content-type {cut(plain(content_type or 'none'), 80)}, "
        f"{len(body)} bytes: {cut(snippet, 120)!r}). Check that the base URL points at a llama-server or GGUF "
        "Cloud deployment, not at a web page or proxy."
    )


def unexpected_shape(deployment: str, what: str) -> InvalidResponse:
    return InvalidResponse(
        f"Deployment {deployment!r} sent {what}. Check that the base URL points at a llama-server or GGUF Cloud "
        "deployment."
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
        return StreamInterrupted(f"{where} broke off mid-stream ({cut(plain(detail))}). Try again.")
    return StreamInterrupted(f"{where} ended before its final event (the connection closed early). Try again.")


def stream_error(deployment: str, data: dict[str, object], secrets: Iterable[str]) -> UpstreamServerError:
    """An error event inside a stream (e.g. llama-server failing mid-generation)."""
    detail = upstream_message(json.dumps(data).encode(), secrets).rstrip(".")
    return UpstreamServerError(f"Deployment {deployment!r} failed mid-answer: {detail}. Try again.")


def too_large(deployment: str, limit: int, what: str) -> ResponseTooLarge:
    return ResponseTooLarge(
        f"Deployment {deployment!r} sent {what} larger than {limit // (1024 * 1024) or 1} MiB; gguf-mcp stopped "
        "reading it. Check that the base URL points at a llama-server, or ask for less (max_tokens, fewer inputs)."
    )


def no_embeddings(deployment: str, cause: UpstreamError) -> NotSupported:
    return NotSupported(
        f"Deployment {deployment!r} does not serve embeddings: its model or server is not set up for them "
        f"(llama-server needs --embeddings). Use a deployment of an embedding model. ({cause})",
        status=cause.status,
    )


def no_output_by_deadline(deployment: str, deadline: float) -> UpstreamTimeout:
    return UpstreamTimeout(
        f"Deployment {deployment!r} produced no output within the {deadline:g} s deadline. Try again, or raise the "
        "deadline."
    )


def stream_failed_with_partial(message: str, tokens: int, partial: str) -> str:
    """A broken stream's error text, with what had arrived."""
    return f"{message} Partial output ({tokens} tokens): {partial}"


def report_config_error(error: ConfigError) -> str:
    """The one line a configuration error prints on stderr (CLI and app factory alike)."""
    return f"gguf-mcp: configuration error: {plain(str(error))}"
