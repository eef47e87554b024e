"""The Prometheus metrics: what is recorded is what `/metrics` says, in a form prometheus_client's
own parser reads, with bounded labels and no secret; and summed across worker processes.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gguf_mcp.clients import Caller, ClientPolicy
from gguf_mcp.fairshare.metrics import OAUTH_CLIENT, Metrics, client_label, status_label
from tests.support.bridge import base_env

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(body: bytes) -> tuple[dict[str, str], Samples]:
    """The families' types, and every sample's value by (name, labels), as Prometheus would read them."""
    families = list(text_string_to_metric_families(body.decode()))
    kinds = {f.name: f.type for f in families}
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    return kinds, values


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


CALL = {"deployment": "dep", "tool": "chat", "client": "team-a"}


def test_what_is_recorded_is_what_the_exposition_says() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.call_started("dep", "chat", "team-a")
    metrics.call_started("dep", "chat", "team-a")
    metrics.call_ended(
        "dep", "chat", "team-a", "ok", input_tokens=12, output_tokens=30, duration_s=1.5, queue_s=0.2, ttft_s=0.4
    )
    metrics.queued("dep", "team-a", +1)
    metrics.deployment_slots("dep", 4)
    metrics.upstream_response("dep", "/v1/chat/completions", 200)
    metrics.upstream_response("dep", "/v1/chat/completions", 503)
    metrics.upstream_response("dep", "/v1/chat/completions", "read timeout")
    metrics.upstream_retry("dep", "/v1/chat/completions", "not ready")
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    kinds, values = parse(body)
    assert kinds["gguf_mcp_calls"] == "counter"
    assert kinds["gguf_mcp_call_duration_seconds"] == "histogram"
    assert kinds["gguf_mcp_calls_in_flight"] == "gauge"
    ok = {**CALL, "outcome": "ok"}
    assert values[key("gguf_mcp_calls_total", **ok)] == 1
    assert values[key("gguf_mcp_prompt_tokens_total", **ok)] == 12
    assert values[key("gguf_mcp_completion_tokens_total", **ok)] == 30
    assert values[key("gguf_mcp_call_duration_seconds_sum", **ok)] == 1.5
    assert values[key("gguf_mcp_call_duration_seconds_bucket", **ok, le="1.0")] == 0
    assert values[key("gguf_mcp_call_duration_seconds_bucket", **ok, le="2.5")] == 1
    assert values[key("gguf_mcp_time_to_first_token_seconds_sum", **ok)] == 0.4
    assert values[key("gguf_mcp_queue_wait_seconds_sum", **ok)] == 0.2
    assert values[key("gguf_mcp_calls_in_flight", **CALL)] == 1
    assert values[key("gguf_mcp_queue_length", deployment="dep", client="team-a")] == 1
    assert values[key("gguf_mcp_deployment_slots", deployment="dep")] == 4
    route = {"deployment": "dep", "route": "/v1/chat/completions"}
    for status in ("200", "503", "read timeout"):
        assert values[key("gguf_mcp_upstream_responses_total", **route, status=status)] == 1
    assert values[key("gguf_mcp_upstream_retries_total", **route, reason="not ready")] == 1
    assert any(name == "process_cpu_seconds_total" for name, _ in values)


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.call_ended("dep", "embed", "team-a", "ok", input_tokens=3, output_tokens=0, duration_s=0.1,
                       queue_s=0.0, ttft_s=None)  # fmt: skip
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_label_values_are_bounded() -> None:
    oauth = Caller("client-id-from-some-issuer-8f2e", ClientPolicy(), configured=False)
    assert client_label(oauth) == OAUTH_CLIENT
    assert client_label(Caller("team-a", ClientPolicy())) == "team-a"
    assert [status_label(s) for s in (200, 599, 600, 42, "connect", "sk-anything")] == [
        "200", "599", "other", "other", "connect", "other",
    ]  # fmt: skip


def test_a_call_that_never_started_leaves_the_in_flight_gauge_alone() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.call_ended("dep", "chat", "team-a", "limit reached", input_tokens=0, output_tokens=0, duration_s=0.0,
                       queue_s=None, ttft_s=None, started=False)  # fmt: skip
    _, values = parse(metrics.render()[0])
    assert values[key("gguf_mcp_calls_total", **CALL, outcome="limit reached")] == 1
    assert values.get(key("gguf_mcp_calls_in_flight", **CALL), 0) == 0
    assert key("gguf_mcp_queue_wait_seconds_count", **CALL, outcome="limit reached") not in values


WORKER = textwrap.dedent(
    """
    import sys
    from gguf_mcp.fairshare.metrics import Metrics

    metrics = Metrics()
    calls, stay = int(sys.argv[1]), sys.argv[2] == "stay"
    for _ in range(calls):
        metrics.call_started("dep", "chat", "team-a")
        metrics.call_ended("dep", "chat", "team-a", "ok", input_tokens=10, output_tokens=5, duration_s=0.5,
                           queue_s=0.0, ttft_s=0.1)
    metrics.call_started("dep", "chat", "team-a")  # one call still in flight
    print("recorded", flush=True)
    if stay:
        sys.stdin.readline()  # alive until the test has scraped
    metrics.close()
    """
)

SCRAPE = "from gguf_mcp.fairshare.metrics import Metrics; import sys; sys.stdout.buffer.write(Metrics().render()[0])"


@pytest.mark.timeout(60)
def test_several_workers_are_summed_and_a_worker_that_left_drops_from_the_gauges(tmp_path: Path) -> None:
    env = {**base_env(), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    run = [sys.executable, "-c"]
    gone = subprocess.run([*run, WORKER, "3", "exit"], env=env, capture_output=True, text=True, timeout=30)
    assert gone.stdout == "recorded\n", gone.stderr
    alive = subprocess.Popen([*run, WORKER, "4", "stay"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    try:
        assert alive.stdout is not None and alive.stdout.readline() == "recorded\n"
        scraped = subprocess.run([*run, SCRAPE], env=env, capture_output=True, timeout=30)
        assert scraped.returncode == 0, scraped.stderr
    finally:
        alive.communicate("\n", timeout=30)
    _, values = parse(scraped.stdout)
    ok = {**CALL, "outcome": "ok"}
    assert values[key("gguf_mcp_calls_total", **ok)] == 7
    assert values[key("gguf_mcp_completion_tokens_total", **ok)] == 35
    assert values[key("gguf_mcp_call_duration_seconds_count", **ok)] == 7
    assert values[key("gguf_mcp_calls_in_flight", **CALL)] == 1  # the live worker's only
