"""What an engine replica tells metrics and traces: a vLLM stat logger that turns vLLM's own
scheduler and iteration stats into the catalog's engine metrics, and the engine span of each
request, with its queue, prefill and decode phases as child spans (from vLLM's request stats).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from observability import metrics, tracing

logger = logging.getLogger(__name__)

# Gauges and counters reach Ray at most this often (a Ray metric call per engine step would
# cost more than the step's bookkeeping); an engine going idle is published at once.
FLUSH_INTERVAL_S = 1.0
# Engine spans waiting for vLLM's finished-request stats; a request that never reaches the
# engine core (refused by validation) leaves its entry until it is pushed out.
MAX_PENDING_SPANS = 4096
# vLLM names an OpenAI request "chatcmpl-<id>" or "cmpl-<id>" ("..._<n>" per prompt).
_VLLM_ID_PREFIXES = ("chatcmpl-", "cmpl-")


@dataclass(frozen=True)
class EngineLabels:
    endpoint: str
    model: str
    replica: str

    def tags(self) -> dict[str, str]:
        return {"endpoint": self.endpoint, "model": self.model, "replica": self.replica}


def replica_name() -> str:
    """This Ray Serve replica's id, or "local" outside Serve."""
    try:
        from ray import serve

        return serve.get_replica_context().replica_id.unique_id
    except Exception:
        return "local"


def gateway_request_id(vllm_request_id: str | None) -> str | None:
    """The id the gateway sent, from vLLM's: "chatcmpl-abc" -> "abc", "cmpl-abc_1" -> "abc"."""
    if not vllm_request_id:
        return None
    for prefix in _VLLM_ID_PREFIXES:
        if vllm_request_id.startswith(prefix):
            rest = vllm_request_id[len(prefix):]
            head, sep, tail = rest.rpartition("_")
            return head if sep and tail.isdigit() else rest
    return vllm_request_id


# -- engine spans ----------------------------------------------------------------------------


class PendingSpans:
    """Engine spans by the gateway's request id, until vLLM reports the request finished."""

    def __init__(self, capacity: int = MAX_PENDING_SPANS) -> None:
        self._spans: OrderedDict[str, trace.Span] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def add(self, request_id: str, span: trace.Span) -> None:
        with self._lock:
            self._spans[request_id] = span
            while len(self._spans) > self._capacity:
                self._spans.popitem(last=False)

    def pop(self, request_id: str | None) -> trace.Span | None:
        if request_id is None:
            return None
        with self._lock:
            return self._spans.pop(request_id, None)


PENDING = PendingSpans()


def take_trace_context(body: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The body without the gateway's trace carrier, and the carrier (None if absent)."""
    if tracing.TRACE_CONTEXT_FIELD not in body:
        return body, None
    rest = dict(body)
    return rest, rest.pop(tracing.TRACE_CONTEXT_FIELD)


def start_engine_span(carrier: Any, kind: str, endpoint: str, request_id: str | None,
                      pending: PendingSpans = PENDING) -> trace.Span | None:
    """The request's span in this replica, child of the gateway's; None when tracing is off."""
    if not tracing.active():
        return None
    operation = tracing.OPERATIONS.get(kind, kind)
    span = tracing.tracer().start_span(
        f"engine {operation} {endpoint}", context=tracing.context_from_carrier(carrier),
        kind=SpanKind.SERVER,
        attributes={tracing.GEN_AI_OPERATION_NAME: operation,
                    tracing.GEN_AI_PROVIDER_NAME: tracing.PROVIDER,
                    tracing.GEN_AI_REQUEST_MODEL: endpoint,
                    "aifactory.endpoint": endpoint})
    if request_id:
        pending.add(request_id, span)
    return span


def end_engine_span(span: trace.Span | None, status: int, error: str | None = None) -> None:
    if span is None or not span.is_recording():
        return
    span.set_attribute("http.response.status_code", int(status))
    if status >= 400:
        span.set_attribute("error.type", error or str(status))
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR, error))
    span.end()


async def traced_stream(stream: AsyncIterator[str], span: trace.Span) -> AsyncIterator[str]:
    """`stream` unchanged; the span ends when it does (finished, failed or closed)."""
    try:
        async for chunk in stream:
            yield chunk
    except BaseException as exc:
        end_engine_span(span, 500 if isinstance(exc, Exception) else 499, type(exc).__name__)
        raise
    finally:
        if hasattr(stream, "aclose"):
            await stream.aclose()
        end_engine_span(span, 200)


def record_phases(span: trace.Span, finished: Any, ended_ns: int) -> None:
    """Queue, prefill and decode as child spans of the engine span, from vLLM's durations of a
    finished request, laid back from the moment vLLM reported it (`ended_ns`)."""
    tracer = tracing.tracer()
    parent = trace.set_span_in_context(span)
    decode_s = max(0.0, float(finished.decode_time))
    prefill_s = max(0.0, float(finished.prefill_time))
    queued_s = max(0.0, float(finished.queued_time))
    decode_start = ended_ns - int(decode_s * 1e9)
    prefill_start = decode_start - int(prefill_s * 1e9)
    queue_start = prefill_start - int(queued_s * 1e9)
    for name, start, end, attrs in (
        ("queue", queue_start, prefill_start, {}),
        ("prefill", prefill_start, decode_start,
         {tracing.GEN_AI_USAGE_INPUT_TOKENS: int(finished.num_prompt_tokens),
          "aifactory.cached_prompt_tokens": int(getattr(finished, "num_cached_tokens", 0))}),
        ("decode", decode_start, ended_ns,
         {tracing.GEN_AI_USAGE_OUTPUT_TOKENS: int(finished.num_generation_tokens)}),
    ):
        child = tracer.start_span(name, context=parent, start_time=start, attributes=attrs)
        child.end(end_time=end)
    if span.is_recording():
        span.set_attributes({
            tracing.GEN_AI_USAGE_INPUT_TOKENS: int(finished.num_prompt_tokens),
            tracing.GEN_AI_USAGE_OUTPUT_TOKENS: int(finished.num_generation_tokens),
        })


# -- engine metrics --------------------------------------------------------------------------


@dataclass
class _Pending:
    """Engine counts since the last flush, and the last gauges seen."""

    waiting: int | None = None
    running: int | None = None
    kv_cache_usage: float | None = None
    prefix_queries: int = 0
    prefix_hits: int = 0
    generation_tokens: int = 0


class EngineStats:
    """Accumulates vLLM's stats and flushes them to the metric catalog. Pure bookkeeping
    around `sink`, so it is testable without vLLM or Ray."""

    def __init__(self, labels: EngineLabels, sink: Any = metrics,
                 flush_interval_s: float = FLUSH_INTERVAL_S, clock=time.monotonic,
                 schedule=None) -> None:
        """`schedule(delay_s, fn)` runs `fn` later (default: on the running asyncio loop),
        so counts held back by the interval still go out when the engine falls quiet."""
        self.labels = labels
        self._tags = labels.tags()
        self._queue_tags = {"endpoint": labels.endpoint, "model": labels.model}
        self._sink = sink
        self._interval = flush_interval_s
        self._clock = clock
        self._last_flush = float("-inf")
        self._pending = _Pending()
        self._schedule = schedule or _call_later
        self._flush_scheduled = False

    def scheduler(self, waiting: int, running: int, kv_cache_usage: float,
                  prefix_queries: int, prefix_hits: int) -> None:
        p = self._pending
        p.waiting, p.running, p.kv_cache_usage = waiting, running, kv_cache_usage
        p.prefix_queries += prefix_queries
        p.prefix_hits += prefix_hits

    def iteration(self, generation_tokens: int, queue_times_s: list[float]) -> None:
        self._pending.generation_tokens += generation_tokens
        for queued in queue_times_s:
            self._sink.observe("aifactory_queue_time_seconds", self._queue_tags, max(0.0, queued))

    def maybe_flush(self) -> None:
        p = self._pending
        idle = p.waiting == 0 and p.running == 0
        waited = self._clock() - self._last_flush
        if idle or waited >= self._interval:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = self._schedule(self._interval - waited, self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        p, sink, tags = self._pending, self._sink, self._tags
        self._last_flush = self._clock()
        if p.waiting is not None:
            sink.set_gauge("aifactory_engine_requests_waiting", tags, p.waiting)
            sink.set_gauge("aifactory_engine_requests_running", tags, p.running)
            sink.set_gauge("aifactory_engine_kv_cache_usage_ratio", tags, p.kv_cache_usage)
        sink.inc("aifactory_engine_prefix_cache_queries", tags, p.prefix_queries)
        sink.inc("aifactory_engine_prefix_cache_hits", tags, p.prefix_hits)
        sink.inc("aifactory_engine_generation_tokens", tags, p.generation_tokens)
        self._pending = _Pending()


def _call_later(delay_s: float, fn) -> bool:
    """Run `fn` after `delay_s` on the running loop; False when there is none."""
    import asyncio

    try:
        asyncio.get_running_loop().call_later(delay_s, fn)
    except RuntimeError:
        return False
    return True


@functools.cache
def _stat_logger_class() -> type:
    from vllm.v1.metrics.loggers import StatLoggerBase

    class AifactoryStatLogger(StatLoggerBase):
        """vLLM stat logger feeding `EngineStats` and the engine spans' phases."""

        def __init__(self, labels: EngineLabels, vllm_config: Any, engine_index: int = 0) -> None:
            self.stats = EngineStats(labels)
            self.failed = False

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None,
                   engine_idx: int = 0) -> None:
            try:
                self._record(scheduler_stats, iteration_stats)
            except Exception:  # telemetry must never stop the engine's output loop
                # Said once: this runs every engine step, and a log line per step is spam.
                logger.log(logging.DEBUG if self.failed else logging.WARNING,
                           "engine stats not recorded", exc_info=True)
                self.failed = True

        def _record(self, scheduler_stats, iteration_stats) -> None:
            if scheduler_stats is not None:
                prefix = scheduler_stats.prefix_cache_stats
                self.stats.scheduler(
                    scheduler_stats.num_waiting_reqs, scheduler_stats.num_running_reqs,
                    scheduler_stats.kv_cache_usage,
                    prefix.queries if prefix is not None else 0,
                    prefix.hits if prefix is not None else 0)
            if iteration_stats is not None:
                finished = iteration_stats.finished_requests
                self.stats.iteration(iteration_stats.num_generation_tokens,
                                     [f.queued_time for f in finished])
                if finished and tracing.active():
                    now = time.time_ns()
                    for request in finished:
                        span = PENDING.pop(gateway_request_id(request.request_id))
                        if span is not None:
                            record_phases(span, request, now)
            self.stats.maybe_flush()

        def log(self) -> None:
            self.stats.flush()

        def log_engine_initialized(self) -> None:
            pass

    return AifactoryStatLogger


def stat_logger_factory(endpoint: str, model: str) -> Any:
    """A per-engine factory for AsyncLLM's `stat_loggers`, labelled for this replica."""
    labels = EngineLabels(endpoint, metrics.model_label(model), replica_name())
    return functools.partial(_stat_logger_class(), labels)
