"""OpenTelemetry: the GenAI usage attributes on the span the MCP SDK opens for each tool call.

The SDK's `OpenTelemetryMiddleware` wraps every request in a span (`tools/call <tool>`) that is
current while the tool runs; this adds what only the tool knows. Without an OpenTelemetry SDK
configured in the process, the span does not record and this costs one check.
"""

from __future__ import annotations

from opentelemetry import trace


def annotate_span(deployment: str, model: str | None, input_tokens: int | None, output_tokens: int | None) -> None:
    """Add `gen_ai.request.model` (the deployment the call asked for: it names one model),
    `gen_ai.response.model` (the model id the answer named) and the usage to the current span."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes: dict[str, str | int] = {"gen_ai.request.model": deployment}
    if model is not None:
        attributes["gen_ai.response.model"] = model
    if input_tokens is not None:
        attributes["gen_ai.usage.input_tokens"] = input_tokens
    if output_tokens is not None:
        attributes["gen_ai.usage.output_tokens"] = output_tokens
    span.set_attributes(attributes)
