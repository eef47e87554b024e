"""What a deployment's answer, or its absence, means: every upstream outcome mapped to its error and text.

`error_for_status` and `error_for_transport` are the two mappings; the functions after them
write the other upstream failures (a redirect, a bad answer, a broken stream). Each message says
what happened and what to do.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from gguf_mcp.bodies import cut, plain, upstream_message
from gguf_mcp.errors.family import (
    MAX_PARTIAL,
    AuthenticationFailed,
    CertificateRejected,
    ConfigError,
    ConnectionFailed,
    DeploymentNotFound,
    DeploymentNotReady,
    DeploymentUnreachable,
    InvalidResponse,
    KeyMissing,
    NotSupported,
    NotTLS,
    ProxyFailed,
    RateLimited,
    Redirected,
    RequestRejected,
    ResponseTooLarge,
    StreamInterrupted,
    TransportFailure,
    UpstreamBusy,
    UpstreamError,
    UpstreamServerError,
    UpstreamTimeout,
)
from gguf_mcp.redaction import Redactor

# --- The mappings -------------------------------------------------------------------------------
_MUST_BE_DEPLOYMENT = "Check that the base URL points at a llama-server or GGUF Cloud deployment"

_BY_STATUS: dict[int, tuple[type[UpstreamError], str]] = {
    401: (
        AuthenticationFailed,
        "{where} rejected the API key (HTTP {status}: {detail}). Check {key_env}: it must be a valid key of the "
        "account that owns the deployment.",
    ),
    404: (
        DeploymentNotFound,
        "{where} was not found (HTTP 404: {detail}). Check its deployment id or base URL, and that it belongs to "
        "the account of {key_env}.",
    ),
    429: (RateLimited, "{where} is rate limiting requests (HTTP 429: {detail}). Wait, then retry."),
    501: (NotSupported, "{where} does not support this request (HTTP 501: {detail})."),
    502: (
        DeploymentUnreachable,
        "{where} is not answering (HTTP {status}: {detail}). It may be restarting or warming up: try again in a "
        "minute.",
    ),
    503: (
        DeploymentNotReady,
        "{where} is not ready (HTTP 503: {detail}). It may be starting or stopped: start it in the GGUF Cloud "
        "dashboard or try again in a minute.",
    ),
}
_BY_STATUS |= {403: _BY_STATUS[401], 504: _BY_STATUS[502]}
_KEY_MISSING = (
    KeyMissing,
    "{where} asks for an API key (HTTP {status}: {detail}), and {key_env} is not set. Set it in the server's "
    "environment, or use --api-key-file.",
)
# llama-server's own 404: the deployment answered, but has no such route.
_NO_ROUTE = (
    NotSupported,
    "{where} answered but has no such route (HTTP 404: {detail}). Its llama-server may be too old for this API, "
    "or the base URL points below the deployment's root.",
)
_REJECTED = (RequestRejected, "{where} rejected the request (HTTP {status}): {detail}")
_FAILED = (UpstreamServerError, "{where} failed (HTTP {status}): {detail}")


def _for_status(status: int, detail: str, has_key: bool) -> tuple[type[UpstreamError], str]:
    if status in (401, 403) and not has_key:
        return _KEY_MISSING
    if status == 404 and detail == "File Not Found":
        return _NO_ROUTE
    return _BY_STATUS.get(status) or (_REJECTED if 400 <= status < 500 else _FAILED)


def error_for_status(
    deployment: str,
    key_env: str,
    status: int,
    body: bytes,
    retry_after: float | None,
    redactor: Redactor,
    *,
    has_key: bool = True,
) -> UpstreamError:
    """Map an HTTP error status from deployment `deployment` (and the seconds its Retry-After asks
    for) to the error the agent reads."""
    detail = upstream_message(body, redactor)
    cls, template = _for_status(status, detail, has_key)
    text = template.format(where=f"Deployment {deployment!r}", status=status, detail=detail, key_env=key_env)
    if retry_after is not None and cls.retryable:
        text += f" It asks to wait {retry_after:g} s before retrying."
    return cls(text, status=status, retry_after=retry_after)


def redirected(deployment: str, base_url: str, status: int, location: str | None, redactor: Redactor) -> Redirected:
    """A 3xx: name where it points (scheme, host and port only: a path or query may hold anything)
    and the likely fix. The host is the upstream's words, lowercased by the parser: redacted, then cut."""
    target = urlsplit(location or "")
    here = urlsplit(base_url)
    host = cut(plain(redactor.text(target.hostname or here.hostname or "?")), 255)
    try:
        port = f":{target.port}" if target.port else ""
    except ValueError:  # not a number: nothing worth naming
        port = ""
    return Redirected(
        f"Deployment {deployment!r} ({base_url}) answered HTTP {status}, a redirect to "
        f"{target.scheme or here.scheme}://{host}{port}. gguf-mcp never follows redirects (they would carry the API "
        "key and the prompt elsewhere): the base URL is probably wrong; set it to where the deployment really is.",
        status=status,
    )


_BY_FAILURE: dict[TransportFailure, tuple[type[UpstreamError], str]] = {
    "connect timeout": (
        ConnectionFailed,
        "{where} could not be reached: connection timed out. Check the URL and network.",
    ),
    "read timeout": (
        UpstreamTimeout,
        "{where} sent nothing for {timeout:g} s (read time-out). Raise GGUF_MCP_TIMEOUT for long generations, or "
        "lower max_tokens.",
    ),
    "pool timeout": (
        UpstreamBusy,
        "{where}: every upstream connection stayed busy for {timeout:g} s, so this call never started. Too many "
        "generations are in flight: raise GGUF_MCP_UPSTREAM_CONNECTIONS, or try again later.",
    ),
    "certificate": (
        CertificateRejected,
        "{where} presented a TLS certificate that did not verify ({detail}). If it is signed by a private CA, set "
        "SSL_CERT_FILE to that CA's bundle (PEM).",
    ),
    "not tls": (
        NotTLS,
        "{where} did not answer the TLS handshake ({detail}): the server may not speak TLS; try http:// instead "
        "of https://.",
    ),
    "proxy": (
        ProxyFailed,
        "{where} could not be reached through the proxy set in the environment ({detail}). Check "
        "HTTPS_PROXY/HTTP_PROXY (and credentials in it), or add the deployment's host to NO_PROXY.",
    ),
    "connect": (
        ConnectionFailed,
        "{where} could not be reached ({detail}). Check the URL and that the server is running.",
    ),
    "dropped": (ConnectionFailed, "{where} dropped the connection ({detail}). Try again."),
    "not http": (
        InvalidResponse,
        "{where} answered with bytes that are not valid HTTP ({detail}); gguf-mcp stopped reading and did not send "
        "the request again. " + _MUST_BE_DEPLOYMENT + ", not at another kind of server.",
    ),
}


def error_for_transport(
    deployment: str, url: str, failure: TransportFailure, detail: str, timeout: float
) -> UpstreamError:
    """Map a transport failure (no usable response) to the error the agent reads."""
    cls, template = _BY_FAILURE[failure]
    return cls(template.format(where=f"Deployment {deployment!r} ({url})", detail=cut(plain(detail)), timeout=timeout))


def unsupported_proxy(scheme: str) -> ConfigError:
    return ConfigError(
        f"The proxy set in the environment (HTTPS_PROXY, HTTP_PROXY or ALL_PROXY) uses {scheme}://, which gguf-mcp "
        "does not support. Use an http:// or https:// proxy, or add the deployment's host to NO_PROXY."
    )


def tls_settings_unusable(name: str, value: str, reason: str) -> ConfigError:
    """SSL_CERT_FILE or SSL_CERT_DIR names a CA bundle gguf-mcp cannot load."""
    return ConfigError(
        f"{name}={cut(plain(value), 200)} cannot be used ({cut(plain(reason), 120)}). Point it at your CA bundle (PEM "
        "file for SSL_CERT_FILE, hashed directory for SSL_CERT_DIR), or unset it to use the system's CA store."
    )


def invalid_response(
    deployment: str, what: str, body: bytes, content_type: str | None, redactor: Redactor
) -> InvalidResponse:
    """A 2xx whose body is not what the protocol promises (e.g. an HTML page from a proxy)."""
    snippet = upstream_message(body[:4096], redactor)
    return InvalidResponse(
        f"Deployment {deployment!r} returned {what} (content-type {cut(plain(content_type or 'none'), 80)}, "
        f"{len(body)} bytes: {cut(snippet, 120)!r}). {_MUST_BE_DEPLOYMENT}, not at a web page or proxy."
    )


def unexpected_shape(deployment: str, what: str) -> InvalidResponse:
    return InvalidResponse(f"Deployment {deployment!r} sent {what}. {_MUST_BE_DEPLOYMENT}.")


def stream_broken(
    deployment: str, url: str, failure: TransportFailure | None, detail: str, timeout: float
) -> UpstreamError:
    """A stream that stalled past the read time-out, broke, ended without its final event, or was not HTTP."""
    where = f"The answer from deployment {deployment!r}"
    if failure == "not http":
        return error_for_transport(deployment, url, failure, detail, timeout)
    if failure == "read timeout":
        return StreamInterrupted(
            f"{where} stalled: nothing arrived for {timeout:g} s (read time-out). Raise GGUF_MCP_TIMEOUT if "
            "the model is slow, or try again."
        )
    if failure is not None:
        return StreamInterrupted(f"{where} broke off mid-stream ({cut(plain(detail))}). Try again.")
    return StreamInterrupted(f"{where} ended before its final event (the connection closed early). Try again.")


def stream_error(deployment: str, data: dict[str, object], redactor: Redactor) -> UpstreamServerError:
    """An error event inside a stream (e.g. llama-server failing mid-generation)."""
    detail = upstream_message(json.dumps(data).encode(), redactor).rstrip(".")
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
    """A broken stream's error text, with what had arrived (its beginning, if that is long; `partial`
    is redacted already, so the cut cannot keep half a key)."""
    if len(partial) <= MAX_PARTIAL:
        return f"{message} Partial output ({tokens} tokens): {partial}"
    return (
        f"{message} Partial output ({tokens} tokens, {len(partial)} characters; the first {MAX_PARTIAL} follow, "
        f"the other {len(partial) - MAX_PARTIAL} are not kept. For a long answer, ask for less per call (a lower "
        f"max_tokens) or set a deadline, which returns what arrived by then as a result): {partial[:MAX_PARTIAL]}"
    )


def no_answer_within(deployment: str, base_url: str, within: float) -> UpstreamTimeout:
    return UpstreamTimeout(f"Deployment {deployment!r} ({base_url}) did not answer within {within:g} s.")


def check_crashed(deployment: str, exc: Exception) -> UpstreamError:
    """A health check that failed in a way gguf-mcp did not foresee (a bug: the log has the traceback)."""
    return UpstreamError(f"Checking deployment {deployment!r} failed unexpectedly ({type(exc).__name__}).")


def no_model_listed(deployment: str, route: str) -> InvalidResponse:
    return InvalidResponse(
        f"Deployment {deployment!r}: GET {route} lists no model. {_MUST_BE_DEPLOYMENT} with a model loaded."
    )
