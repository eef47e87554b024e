"""Prometheus metrics, through the official `prometheus_client`: what each call cost and waited,
per deployment, tool, client and outcome, and what the deployments answered.

| metric (`gguf_mcp_` ...)               | type      | labels                              |
|----------------------------------------|-----------|-------------------------------------|
| `calls_total`                          | counter   | deployment, tool, client, outcome   |
| `prompt_tokens_total`                  | counter   | deployment, tool, client, outcome   |
| `completion_tokens_total`              | counter   | deployment, tool, client, outcome   |
| `time_to_first_token_seconds`          | histogram | deployment, tool, client, outcome   |
| `call_duration_seconds`                | histogram | deployment, tool, client, outcome   |
| `queue_wait_seconds`                   | histogram | deployment, tool, client, outcome   |
| `calls_in_flight`                      | gauge     | deployment, tool, client            |
| `queue_length`                         | gauge     | deployment, client                  |
| `deployment_slots`                     | gauge     | deployment                          |
| `upstream_responses_total`             | counter   | deployment, route, status           |
| `upstream_retries_total`               | counter   | deployment, route, reason           |

Tokens are as the deployment reported them (`usage`); a call cut before its usage arrived counts
what was counted of it. Time to first token is observed for streamed calls that got one; queue
wait for every call admitted (0 when a slot was free). Calls in flight include queued ones.
`status` is the HTTP status, or how the request failed without one (`read timeout`, `connect`,
...); `reason` is the failed attempt's error label (or `stale connection`, the one free resend).

Label values are bounded: deployments and tools are configured names (callers pass nothing
else), a client is its table name or `oauth` for an OAuth client without one, an outcome is `ok`,
`cancelled`, `deadline` or an error's label. No key, token, prompt or output is ever a label or a value.

Several workers (`uvicorn --workers N`): the operator sets `PROMETHEUS_MULTIPROC_DIR` to an empty
directory the server may write, in the environment uvicorn starts with (prometheus_client picks
the mode when it is first imported), and empties it before each start. Each worker writes its
values there and `/metrics`, whichever worker answers, sums them; gauges count live workers only
(`Metrics.close()` at a worker's exit removes its gauge files).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, multiprocess
from prometheus_client.exposition import choose_encoder

from gguf_mcp.errors import metrics_dir_unusable
from gguf_mcp.fairshare.labels import OAUTH_CLIENT, client_label, status_label

__all__ = ["OAUTH_CLIENT", "Metrics", "client_label", "status_label"]

PER_CALL = ("deployment", "tool", "client", "outcome")
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The process's metrics and their exposition. One per process (per registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # prometheus_client chose its value store when first imported: mmap files under this directory, or memory.
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if self.multiprocess_dir is not None and not _writable_dir(self.multiprocess_dir):
            raise metrics_dir_unusable(self.multiprocess_dir)  # at start, not in the first call
        self._registry = registry if registry is not None else CollectorRegistry()
        reg = self._registry
        if self.multiprocess_dir is None:
            ProcessCollector(registry=reg)  # CPU, memory, descriptors; per worker, so not in multiprocess mode
        self._calls = Counter("gguf_mcp_calls", "Tool calls that ended, by outcome.", PER_CALL, registry=reg)
        self._prompt = Counter(
            "gguf_mcp_prompt_tokens", "Prompt tokens, as the deployment reported them.", PER_CALL, registry=reg
        )
        self._completion = Counter(
            "gguf_mcp_completion_tokens", "Completion tokens, as the deployment reported them.", PER_CALL, registry=reg
        )
        self._ttft = Histogram(
            "gguf_mcp_time_to_first_token_seconds",
            "From the call's arrival to its first streamed token (queue wait included).",
            PER_CALL,
            buckets=TTFT_BUCKETS,
            registry=reg,
        )
        self._duration = Histogram(
            "gguf_mcp_call_duration_seconds", "Whole tool calls, queue wait included.", PER_CALL,
            buckets=DURATION_BUCKETS, registry=reg,
        )  # fmt: skip
        self._wait = Histogram(
            "gguf_mcp_queue_wait_seconds", "Time a call waited for a free slot of its deployment.", PER_CALL,
            buckets=WAIT_BUCKETS, registry=reg,
        )  # fmt: skip
        self._in_flight = Gauge(
            "gguf_mcp_calls_in_flight", "Calls in progress, queued ones included.", PER_CALL[:3],
            multiprocess_mode="livesum", registry=reg,
        )  # fmt: skip
        self._queued = Gauge(
            "gguf_mcp_queue_length", "Calls waiting for a free slot.", ("deployment", "client"),
            multiprocess_mode="livesum", registry=reg,
        )  # fmt: skip
        self._slots = Gauge(
            "gguf_mcp_deployment_slots", "Calls a deployment runs at once (per process); absent: unknown, not queued.",
            ("deployment",), multiprocess_mode="livemax", registry=reg,
        )  # fmt: skip
        self._responses = Counter(
            "gguf_mcp_upstream_responses", "Requests to deployments, by HTTP status or failure.",
            ("deployment", "route", "status"), registry=reg,
        )  # fmt: skip
        self._retries = Counter(
            "gguf_mcp_upstream_retries", "Requests to deployments sent again, by the failure that caused it.",
            ("deployment", "route", "reason"), registry=reg,
        )  # fmt: skip

        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once per label set (the library's own lookup costs ~4 us)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def call_started(self, deployment: str, tool: str, client: str) -> None:
        self._child(self._in_flight, deployment, tool, client).inc()

    def call_ended(
        self,
        deployment: str,
        tool: str,
        client: str,
        outcome: str,
        *,
        input_tokens: int,
        output_tokens: int,
        duration_s: float,
        queue_s: float | None,
        ttft_s: float | None,
        started: bool = True,
    ) -> None:
        """One finished call. `queue_s` None: it never reached the queue; `started`: `call_started` was called."""
        if started:
            self._child(self._in_flight, deployment, tool, client).dec()
        labels = (deployment, tool, client, outcome)
        self._child(self._calls, *labels).inc()
        if input_tokens:
            self._child(self._prompt, *labels).inc(input_tokens)
        if output_tokens:
            self._child(self._completion, *labels).inc(output_tokens)
        self._child(self._duration, *labels).observe(duration_s)
        if queue_s is not None:
            self._child(self._wait, *labels).observe(queue_s)
        if ttft_s is not None:
            self._child(self._ttft, *labels).observe(ttft_s)

    def queued(self, deployment: str, client: str, change: int) -> None:
        """A call of `client` started (+1) or stopped (-1) waiting for a slot of `deployment`."""
        self._child(self._queued, deployment, client).inc(change)

    def deployment_slots(self, deployment: str, slots: int | None) -> None:
        if slots is not None:
            self._slots.labels(deployment).set(slots)

    def upstream_response(self, deployment: str, route: str, status: int | str) -> None:
        """Every answer from a deployment (each attempt), or the transport failure that replaced it."""
        self._child(self._responses, deployment, route, status_label(status)).inc()

    def upstream_retry(self, deployment: str, route: str, reason: str) -> None:
        self._child(self._retries, deployment, route, reason).inc()

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition for `GET /metrics` and its content type (OpenMetrics if `accept` asks for it)."""
        encoder, content_type = choose_encoder(accept or "")
        if self.multiprocess_dir is None:
            return encoder(self._registry), content_type
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return encoder(registry), content_type

    def close(self) -> None:
        """At the process's exit: its live gauges leave the sum (multiprocess mode)."""
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]


def _writable_dir(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)
