"""One call's way through the fair share: the client's limits, a slot of its deployment, and at
the end, whatever the outcome, its tokens counted, its metrics, its audit record, its span.

    async with fair_share.call(caller, dep, "chat", request_id=ctx.request_id,
                               max_tokens=max_tokens, deadline=deadline, on_wait=tell) as call:
        body["max_tokens"] = call.max_tokens           # the client's cap applied
        ...                                            # send; call.first_token() on the first token
        call.usage(input_tokens, output_tokens, model) # as the deployment reported them
        call.stopped_at_deadline()                     # if the deadline cut the answer

Refused calls (`ClientLimitReached`) and calls that waited past their bound (`UpstreamBusy`,
"saturated") raise before the body runs: nothing is sent. The record is written when the block
exits, so a streamed call cut mid-way is counted with what it had reported.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from gguf_mcp.clients import GENERATE_SCOPE, TOOL_SCOPES, Caller
from gguf_mcp.config import Deployment, Settings
from gguf_mcp.errors import GGUFMCPError
from gguf_mcp.fairshare.audit import AuditLog, AuditRecord
from gguf_mcp.fairshare.labels import client_label
from gguf_mcp.fairshare.limits import Admission, ClientLimits
from gguf_mcp.fairshare.order import FirstCome, Rotation
from gguf_mcp.fairshare.queue import OnWait
from gguf_mcp.fairshare.slots import Queues
from gguf_mcp.fairshare.tracing import annotate_span
from gguf_mcp.upstream import UpstreamClient

if TYPE_CHECKING:  # prometheus_client is imported only by a process that collects metrics
    from gguf_mcp.fairshare.metrics import Metrics

GRACE_S = 0.05
"""How long a slot stays held for a client whose last call just ended while others wait
(`gguf_mcp.fairshare.queue`): its next call is one round trip away (MCP over HTTP on loopback:
a few ms; across a network, tens)."""


def waiting_message(deployment: str, ahead: int) -> str:
    """The progress message of a call waiting for a slot."""
    return f"waiting for a free slot on {deployment}: {ahead} ahead"


@dataclass
class Call:
    """One admitted call, as its body sees it; what the body reports ends up in the record."""

    caller: Caller
    deployment: str
    tool: str
    request_id: str | None
    arrived: float
    max_tokens: int | None = None
    """What to send as max_tokens: the call's own, lowered or set by the client's cap."""
    max_tokens_note: str | None = None
    """Set when the cap lowered the call's max_tokens: say it in the result."""
    queue_s: float | None = None
    """Seconds waited for the slot (None until admitted)."""
    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str | None = None
    first_token_at: float | None = field(default=None, repr=False)
    deadline_cut: bool = False

    def first_token(self) -> None:
        """The first token arrived (streamed calls); later calls change nothing."""
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    def usage(self, input_tokens: int | None, output_tokens: int | None, model: str | None = None) -> None:
        """The tokens the deployment reported (or counted so far of a cut stream); the last report counts."""
        self.input_tokens, self.output_tokens = input_tokens, output_tokens
        if model is not None:
            self.model = model[:256]

    def stopped_at_deadline(self) -> None:
        """The deadline cut the answer short: the outcome is `deadline`."""
        self.deadline_cut = True

    def ttft(self) -> float | None:
        """Seconds from arrival to the first token, if one came."""
        return None if self.first_token_at is None else self.first_token_at - self.arrived

    def record(self, outcome: str, duration: float) -> AuditRecord:
        return AuditRecord(
            time=AuditRecord.now(),
            request_id=self.request_id,
            client=self.caller.name,
            deployment=self.deployment,
            tool=self.tool,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            queue_ms=round((self.queue_s or 0.0) * 1000, 1),
            duration_ms=round(duration * 1000, 1),
            outcome=outcome,
        )

    def remaining(self, deadline: float | None) -> float | None:
        """What is left of a deadline (seconds from the call's arrival) once the wait for a slot is over."""
        return None if deadline is None else max(0.0, deadline - (time.monotonic() - self.arrived))


class FairShare:
    """The process's fair share of every deployment: limits, queues, metrics, audit."""

    def __init__(
        self,
        upstream: UpstreamClient,
        *,
        read_timeout: float,
        max_concurrency: Mapping[str, int] | None = None,
        metrics: Metrics | None = None,
        audit: AuditLog | None = None,
        fair: bool = True,
        grace: float = GRACE_S,
    ) -> None:
        """`fair`: clients in turn (else first come first served); `grace`: see `GRACE_S`."""
        self.metrics = metrics
        self.audit = audit
        self.limits = ClientLimits()
        self._read_timeout = read_timeout
        on_queue = None if metrics is None else metrics.queued
        on_slots = None if metrics is None else metrics.deployment_slots
        order = Rotation if fair else FirstCome
        self.queues = Queues(
            upstream, max_concurrency, order=order, on_queue=on_queue, on_slots=on_slots, grace=grace if fair else 0.0
        )

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        upstream: UpstreamClient,
        *,
        metrics: Metrics | None = None,
        audit: AuditLog | None = None,
    ) -> FairShare:
        """The fair share of the configured deployments (their `max_concurrency`, the read time-out)."""
        fixed = {d.name: d.max_concurrency for d in settings.deployments.values() if d.max_concurrency is not None}
        return cls(upstream, read_timeout=settings.timeout, max_concurrency=fixed, metrics=metrics, audit=audit)

    def close(self) -> None:
        """At the process's exit: the audit trail closed, the metrics' live gauges out of the workers' sum."""
        if self.audit is not None:
            self.audit.close()
        if self.metrics is not None:
            self.metrics.close()

    @asynccontextmanager
    async def call(
        self,
        caller: Caller,
        dep: Deployment,
        tool: str,
        *,
        request_id: str | int | None = None,
        max_tokens: int | None = None,
        deadline: float | None = None,
        on_wait: OnWait | None = None,
    ) -> AsyncIterator[Call]:
        """Admit a call and hold a slot for the body; see the module's docstring."""
        call = Call(caller, dep.name, tool, None if request_id is None else str(request_id), time.monotonic())
        admission: Admission | None = None
        outcome = "internal"
        try:
            admission = self.limits.admit(caller, max_tokens, generates=TOOL_SCOPES.get(tool) == GENERATE_SCOPE)
            call.max_tokens, call.max_tokens_note = admission.max_tokens, admission.note
            if self.metrics is not None:
                self.metrics.call_started(dep.name, tool, client_label(caller))
            queue = await self.queues.get(dep)
            within, bound = self._wait_bound(deadline)
            label = client_label(caller)
            async with queue.slot(caller.name, tag=label, on_wait=on_wait, within=within, bound=bound) as waited:
                call.queue_s = waited
                yield call
            outcome = "deadline" if call.deadline_cut else "ok"
        except anyio.get_cancelled_exc_class():
            outcome = "cancelled"
            raise
        except GGUFMCPError as exc:
            outcome = exc.label
            raise
        finally:
            self._finish(call, admission, outcome)

    def _wait_bound(self, deadline: float | None) -> tuple[float, str]:
        if deadline is not None and deadline < self._read_timeout:
            return deadline, f"the call's {deadline:g} s deadline"
        return self._read_timeout, f"the read time-out, GGUF_MCP_TIMEOUT = {self._read_timeout:g} s"

    def _finish(self, call: Call, admission: Admission | None, outcome: str) -> None:
        """Count, measure and record a call that ended, however it ended (no await: cancellation cannot cut it)."""
        duration = time.monotonic() - call.arrived
        if admission is not None:
            self.limits.release(admission, (call.input_tokens or 0) + (call.output_tokens or 0))
        if self.metrics is not None:
            self.metrics.call_ended(
                call.deployment, call.tool, client_label(call.caller), outcome,
                input_tokens=call.input_tokens or 0, output_tokens=call.output_tokens or 0,
                duration_s=duration, queue_s=call.queue_s, ttft_s=call.ttft(), started=admission is not None,
            )  # fmt: skip
        if self.audit is not None:
            self.audit.write(call.record(outcome, duration))
        annotate_span(call.deployment, call.model, call.input_tokens, call.output_tokens)
