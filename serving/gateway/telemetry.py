"""What the gateway tells metrics and traces about each request: the request's span (when
tracing is on) and the metrics recorded as a request is admitted and as it ends."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from observability import metrics, tracing
from observability.slo import SloTargets
from serving.tenancy import ErrorClass, Outcome

logger = logging.getLogger(__name__)

# -- judging a request -----------------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    """One request as it ended, in the terms the metrics use (times in seconds)."""

    tenant: str
    endpoint: str
    model: str
    outcome: Outcome
    prompt_tokens: int
    completion_tokens: int
    duration_s: float
    ttft_s: float | None = None
    itl_s: float | None = None
    rejected_code: str | None = None
    error_class: ErrorClass | None = None
    batch: bool = False  # a batch job's line: counted by the batch metrics instead

    @property
    def outcome_label(self) -> str:
        """The `outcome` label: an error that is no platform fault (the client's bad request,
        the documented overload refusal) by its class, so that availability, which counts
        `ok` and `error`, counts platform faults only (as the SLA report does)."""
        if (self.outcome is Outcome.ERROR and self.error_class is not None
                and not ErrorClass(self.error_class).is_platform_fault):
            return str(self.error_class)
        return str(self.outcome)


def inter_token_latency(first_at: float | None, last_at: float | None, events: int) -> float | None:
    """Mean gap between content events after the first; None with fewer than two events.
    E.g. first at 1.0 s, last at 1.4 s, 5 events -> 0.4 / 4 = 0.1 s."""
    if first_at is None or last_at is None or events < 2:
        return None
    return max(0.0, last_at - first_at) / (events - 1)


def slo_verdict(done: Finished, ttft_target_s: float, itl_target_s: float) -> str | None:
    """"met" when a successful streamed request kept both targets, "missed" when it did not,
    None when there is nothing to judge (not ok, or no token timing was measured)."""
    if done.outcome is not Outcome.OK or done.ttft_s is None:
        return None
    itl_ok = done.itl_s is None or done.itl_s <= itl_target_s
    return "met" if done.ttft_s <= ttft_target_s and itl_ok else "missed"


# -- recording -------------------------------------------------------------------------------


class MetricSink(Protocol):
    def inc(self, name: str, tags: Mapping[str, str], value: float = 1.0) -> None: ...

    def set_gauge(self, name: str, tags: Mapping[str, str], value: float) -> None: ...

    def observe(self, name: str, tags: Mapping[str, str], value: float) -> None: ...


class RequestMetrics:
    """Records the gateway's request metrics into `sink` (the Ray-backed catalog by default).
    Keeps this process's in-flight counts, since a Ray gauge is set, not incremented."""

    def __init__(self, sink: MetricSink = metrics) -> None:
        self._sink = sink
        self._in_flight: Counter[tuple[str, str, str]] = Counter()
        self._targets: dict[str, tuple[float, float, float]] = {}
        self._lock = threading.Lock()

    def started(self, tenant: str, endpoint: str, model: str, batch: bool = False) -> None:
        if not batch:  # batch lines are the store's to count (aifactory_batch_lines_pending)
            self._move_in_flight((tenant, endpoint, model), +1)

    def withdrawn(self, tenant: str, endpoint: str, model: str, batch: bool = False) -> None:
        """A request that started and will be sent again (Access.withdraw): not counted."""
        if not batch:
            self._move_in_flight((tenant, endpoint, model), -1)

    def finished(self, done: Finished, slo: SloTargets, was_in_flight: bool) -> None:
        """`slo` is the tenant's targets. A batch line is counted apart: it has no latency
        target, and a backlog of lines must not read as the tenant's interactive traffic."""
        tags = {"tenant": done.tenant, "endpoint": done.endpoint, "model": done.model}
        sink = self._sink
        if done.batch:
            sink.inc("aifactory_batch_lines", {**tags, "outcome": done.outcome_label})
            sink.inc("aifactory_batch_prompt_tokens", tags, done.prompt_tokens)
            sink.inc("aifactory_batch_completion_tokens", tags, done.completion_tokens)
            return
        if was_in_flight:
            self._move_in_flight((done.tenant, done.endpoint, done.model), -1)
        sink.inc("aifactory_requests", {**tags, "outcome": done.outcome_label})
        if done.outcome is Outcome.REJECTED:
            sink.inc("aifactory_rate_limited", {**tags, "code": done.rejected_code or "unknown"})
            return
        sink.observe("aifactory_request_duration_seconds", tags, done.duration_s)
        sink.inc("aifactory_prompt_tokens", tags, done.prompt_tokens)
        sink.inc("aifactory_completion_tokens", tags, done.completion_tokens)
        if done.ttft_s is not None:
            sink.observe("aifactory_time_to_first_token_seconds", tags, done.ttft_s)
        if done.itl_s is not None:
            sink.observe("aifactory_inter_token_latency_seconds", tags, done.itl_s)
        verdict = slo_verdict(done, slo.ttft_p95_s, slo.itl_p95_s)
        if verdict is not None:
            sink.inc("aifactory_slo_requests", {**tags, "slo": verdict})
            self._publish_targets(done.tenant, slo)

    def _move_in_flight(self, key: tuple[str, str, str], step: int) -> None:
        with self._lock:
            self._in_flight[key] += step
            value = self._in_flight[key]
        tenant, endpoint, model = key
        self._sink.set_gauge("aifactory_requests_in_flight",
                             {"tenant": tenant, "endpoint": endpoint, "model": model}, value)

    def _publish_targets(self, tenant: str, slo: SloTargets) -> None:
        """The tenant's targets beside its verdicts, so PromQL can compare against them; set
        again only when they change."""
        targets = (slo.ttft_p95_s, slo.itl_p95_s, slo.objective)
        if self._targets.get(tenant) == targets:
            return
        self._targets[tenant] = targets
        self._sink.set_gauge("aifactory_tenant_slo_target_seconds",
                             {"tenant": tenant, "sli": "ttft"}, targets[0])
        self._sink.set_gauge("aifactory_tenant_slo_target_seconds",
                             {"tenant": tenant, "sli": "itl"}, targets[1])
        self._sink.set_gauge("aifactory_tenant_slo_objective_ratio", {"tenant": tenant}, targets[2])


def dead_letter(tenant: str, sink: MetricSink = metrics) -> None:
    """A usage record the store refused for good (see ledger_writer)."""
    try:
        sink.inc("aifactory_ledger_dead_letters", {"tenant": tenant})
    except Exception:  # telemetry never fails the ledger
        logger.warning("recording a dead letter failed", exc_info=True)


# -- tracing ---------------------------------------------------------------------------------


def start_request_span(headers: Mapping[str, str], kind: str) -> trace.Span | None:
    """The request's server span, child of the client's `traceparent` when it sent one; None
    when tracing is off (then nothing else here does any work)."""
    if not tracing.active():
        return None
    operation = tracing.OPERATIONS.get(kind, kind)
    return tracing.tracer().start_span(
        operation, context=tracing.extract(headers), kind=SpanKind.SERVER,
        attributes={tracing.GEN_AI_OPERATION_NAME: operation,
                    tracing.GEN_AI_PROVIDER_NAME: tracing.PROVIDER})


@contextmanager
def step(span: trace.Span | None, name: str) -> Iterator[None]:
    """A child span of the request's span for one step (auth, routing, admission)."""
    if span is None:
        yield
        return
    with tracing.tracer().start_as_current_span(name, context=trace.set_span_in_context(span)):
        yield


def describe_request(span: trace.Span | None, kind: str, endpoint: str, body: Mapping[str, Any],
                     tenant: str) -> None:
    if span is None or not span.is_recording():
        return
    attrs = tracing.request_attributes(kind, endpoint, body)
    attrs["aifactory.tenant"] = tenant
    attrs["aifactory.endpoint"] = endpoint
    span.set_attributes(attrs)
    span.update_name(f"{attrs[tracing.GEN_AI_OPERATION_NAME]} {endpoint}")


def with_trace_context(span: trace.Span | None, body: dict[str, Any]) -> dict[str, Any]:
    """The body to send to the engine: carrying the span as the engine span's parent."""
    if span is None or not span.is_recording():
        return body
    return {**body, tracing.TRACE_CONTEXT_FIELD: tracing.carrier_for(span)}


def describe_response(span: trace.Span | None, body: Mapping[str, Any]) -> None:
    """GenAI response attributes from a finished body or a stream's first event."""
    if span is None or not span.is_recording():
        return
    response_id = body.get("id")
    if isinstance(response_id, str):
        span.set_attribute(tracing.GEN_AI_RESPONSE_ID, response_id)
    model = body.get("model")
    if isinstance(model, str):
        span.set_attribute(tracing.GEN_AI_RESPONSE_MODEL, model)
    choices = body.get("choices")
    if isinstance(choices, list):
        reasons = [c.get("finish_reason") for c in choices if isinstance(c, dict)]
        reasons = [r for r in reasons if isinstance(r, str)]
        if reasons:
            span.set_attribute(tracing.GEN_AI_RESPONSE_FINISH_REASONS, reasons)


def record_usage(span: trace.Span | None, outcome: Outcome, prompt_tokens: int,
                 completion_tokens: int) -> None:
    if span is None or not span.is_recording():
        return
    span.set_attributes({
        tracing.GEN_AI_USAGE_INPUT_TOKENS: prompt_tokens,
        tracing.GEN_AI_USAGE_OUTPUT_TOKENS: completion_tokens,
        "aifactory.outcome": str(outcome),
    })


def end_span(span: trace.Span | None, status_code: int | None = None,
             error: str | None = None) -> None:
    """End the request's span once (a second call does nothing)."""
    if span is None or not span.is_recording():
        return
    if status_code is not None:
        span.set_attribute("http.response.status_code", status_code)
    if error is not None or (status_code is not None and status_code >= 500):
        span.set_attribute("error.type", error or str(status_code))
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()
