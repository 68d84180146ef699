"""The gateway's request metrics and spans, and the engine's stats, recorded into a fake sink
(pure bookkeeping; the real Ray export is checked end to end in tests/e2e/test_metrics.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from observability import tracing
from observability.slo import DEFAULT_SLO, SloTargets
from serving.engine import telemetry as engine_telemetry
from serving.gateway import telemetry
from serving.tenancy import Outcome


class FakeSink:
    """Records what would reach Ray: counters summed, gauges' last value, observations."""

    def __init__(self) -> None:
        self.counters: dict[tuple, float] = {}
        self.gauges: dict[tuple, float] = {}
        self.observed: dict[tuple, list[float]] = {}

    @staticmethod
    def _key(name, tags):
        return (name, *sorted(tags.items()))

    def inc(self, name, tags, value=1.0):
        if value:
            key = self._key(name, tags)
            self.counters[key] = self.counters.get(key, 0) + value

    def set_gauge(self, name, tags, value):
        self.gauges[self._key(name, tags)] = value

    def observe(self, name, tags, value):
        self.observed.setdefault(self._key(name, tags), []).append(value)

    def counter(self, name, **tags):
        return self.counters.get(self._key(name, tags))

    def gauge(self, name, **tags):
        return self.gauges.get(self._key(name, tags))

    def observations(self, name, **tags):
        return self.observed.get(self._key(name, tags), [])


LABELS = {"tenant": "acme", "endpoint": "demo", "model": "llama"}


def finished(outcome=Outcome.OK, ttft=0.5, itl=0.05, **kw):
    base = {"tenant": "acme", "endpoint": "demo", "model": "llama", "outcome": outcome,
            "prompt_tokens": 7, "completion_tokens": 11, "duration_s": 1.25, "ttft_s": ttft,
            "itl_s": itl}
    return telemetry.Finished(**{**base, **kw})


@pytest.mark.parametrize(("first", "last", "events", "itl"), [
    (1.0, 1.4, 5, 0.1),     # 0.4 s over 4 gaps
    (1.0, 1.0, 1, None),    # one event: no gap to measure
    (None, None, 0, None),  # nothing streamed
    (2.0, 2.3, 4, 0.1),     # 0.3 / 3
])
def test_inter_token_latency(first, last, events, itl):
    got = telemetry.inter_token_latency(first, last, events)
    assert got == pytest.approx(itl) if itl is not None else got is None


@pytest.mark.parametrize(("done", "verdict"), [
    (finished(ttft=1.9, itl=0.19), "met"),
    (finished(ttft=2.0, itl=0.2), "met"),        # at the target is within it
    (finished(ttft=2.1, itl=0.01), "missed"),    # first token too late
    (finished(ttft=0.1, itl=0.25), "missed"),    # tokens too far apart
    (finished(ttft=0.1, itl=None), "met"),       # one token: only TTFT to judge
    (finished(ttft=None, itl=None), None),       # not streamed: no token timing measured
    (finished(Outcome.ERROR, ttft=0.1), None),   # only successful requests are judged
    (finished(Outcome.CLIENT_CANCELLED, ttft=0.1), None),
])
def test_slo_verdict_against_default_targets(done, verdict):
    assert telemetry.slo_verdict(done, DEFAULT_SLO.ttft_p95_s, DEFAULT_SLO.itl_p95_s) == verdict


def test_a_successful_streamed_request_records_every_series_once():
    sink = FakeSink()
    recorder = telemetry.RequestMetrics(sink)
    recorder.started("acme", "demo", "llama")
    assert sink.gauge("aifactory_requests_in_flight", **LABELS) == 1
    recorder.finished(finished(), SloTargets(ttft_p95_s=1.0, itl_p95_s=0.1, objective=0.95),
                      was_in_flight=True)

    assert sink.gauge("aifactory_requests_in_flight", **LABELS) == 0
    assert sink.counter("aifactory_requests", **LABELS, outcome="ok") == 1
    assert sink.counter("aifactory_prompt_tokens", **LABELS) == 7
    assert sink.counter("aifactory_completion_tokens", **LABELS) == 11
    assert sink.observations("aifactory_request_duration_seconds", **LABELS) == [1.25]
    assert sink.observations("aifactory_time_to_first_token_seconds", **LABELS) == [0.5]
    assert sink.observations("aifactory_inter_token_latency_seconds", **LABELS) == [0.05]
    assert sink.counter("aifactory_slo_requests", **LABELS, slo="met") == 1
    assert sink.gauge("aifactory_tenant_slo_target_seconds", tenant="acme", sli="ttft") == 1.0
    assert sink.gauge("aifactory_tenant_slo_target_seconds", tenant="acme", sli="itl") == 0.1
    assert sink.gauge("aifactory_tenant_slo_objective_ratio", tenant="acme") == 0.95
    assert sink.counter("aifactory_rate_limited", **LABELS, code="rate_limit_exceeded") is None


def test_a_rejected_request_counts_as_rejected_and_rate_limited_only():
    sink = FakeSink()
    recorder = telemetry.RequestMetrics(sink)
    done = finished(Outcome.REJECTED, ttft=None, itl=None, prompt_tokens=0, completion_tokens=0,
                    rejected_code="insufficient_quota")
    recorder.finished(done, DEFAULT_SLO, was_in_flight=False)
    assert sink.counter("aifactory_requests", **LABELS, outcome="rejected") == 1
    assert sink.counter("aifactory_rate_limited", **LABELS, code="insufficient_quota") == 1
    # Never admitted: no in-flight move, no latency, no tokens, no SLO verdict, no targets.
    assert sink.gauges == {}
    assert sink.observed == {}
    assert {k[0] for k in sink.counters} == {"aifactory_requests", "aifactory_rate_limited"}


def test_a_batch_line_is_counted_by_the_batch_metrics_only():
    sink = FakeSink()
    recorder = telemetry.RequestMetrics(sink)
    recorder.started("acme", "demo", "llama", batch=True)
    recorder.finished(finished(ttft=None, itl=None, batch=True), DEFAULT_SLO, was_in_flight=True)
    recorder.finished(finished(Outcome.ERROR, ttft=None, itl=None, completion_tokens=0,
                               batch=True), DEFAULT_SLO, was_in_flight=True)
    assert sink.counter("aifactory_batch_lines", **LABELS, outcome="ok") == 1
    assert sink.counter("aifactory_batch_lines", **LABELS, outcome="error") == 1
    assert sink.counter("aifactory_batch_prompt_tokens", **LABELS) == 14
    assert sink.counter("aifactory_batch_completion_tokens", **LABELS) == 11
    # Nothing in the interactive series: no request, no in-flight move, no latency.
    assert sink.gauges == {} and sink.observed == {}
    assert {k[0] for k in sink.counters} == {"aifactory_batch_lines",
                                             "aifactory_batch_prompt_tokens",
                                             "aifactory_batch_completion_tokens"}


def test_non_streamed_and_failed_requests_get_no_made_up_latencies():
    sink = FakeSink()
    recorder = telemetry.RequestMetrics(sink)
    for done in (finished(ttft=None, itl=None), finished(Outcome.ERROR, ttft=None, itl=None,
                                                         prompt_tokens=0, completion_tokens=0)):
        recorder.started("acme", "demo", "llama")
        recorder.finished(done, DEFAULT_SLO, was_in_flight=True)
    assert sink.counter("aifactory_requests", **LABELS, outcome="ok") == 1
    assert sink.counter("aifactory_requests", **LABELS, outcome="error") == 1
    assert len(sink.observations("aifactory_request_duration_seconds", **LABELS)) == 2
    assert sink.observations("aifactory_time_to_first_token_seconds", **LABELS) == []
    assert sink.counter("aifactory_slo_requests", **LABELS, slo="met") is None
    assert sink.counter("aifactory_slo_requests", **LABELS, slo="missed") is None
    assert sink.counter("aifactory_prompt_tokens", **LABELS) == 7  # the error added none
    assert sink.gauge("aifactory_requests_in_flight", **LABELS) == 0


def test_targets_are_published_again_only_when_they_change():
    sink = FakeSink()
    recorder = telemetry.RequestMetrics(sink)
    calls = []
    original = sink.set_gauge
    sink.set_gauge = lambda name, tags, value: (calls.append(name), original(name, tags, value))
    recorder.finished(finished(), DEFAULT_SLO, was_in_flight=False)
    recorder.finished(finished(), DEFAULT_SLO, was_in_flight=False)
    assert calls.count("aifactory_tenant_slo_objective_ratio") == 1
    recorder.finished(finished(), SloTargets(ttft_p95_s=1.0, itl_p95_s=0.1, objective=0.999),
                      was_in_flight=False)
    assert calls.count("aifactory_tenant_slo_objective_ratio") == 2
    assert sink.gauge("aifactory_tenant_slo_objective_ratio", tenant="acme") == 0.999


# -- engine stats ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


ENGINE = {"endpoint": "demo", "model": "llama", "replica": "r1"}


def test_engine_stats_accumulate_between_flushes_and_flush_at_once_when_idle():
    sink, clock, later = FakeSink(), Clock(), []
    stats = engine_telemetry.EngineStats(engine_telemetry.EngineLabels("demo", "llama", "r1"),
                                         sink, flush_interval_s=1.0, clock=clock,
                                         schedule=lambda delay, fn: later.append((delay, fn)) or True)
    stats.scheduler(waiting=2, running=3, kv_cache_usage=0.25, prefix_queries=10, prefix_hits=4)
    stats.iteration(generation_tokens=3, queue_times_s=[])
    stats.maybe_flush()  # first flush: nothing sent before
    assert sink.counter("aifactory_engine_generation_tokens", **ENGINE) == 3
    assert sink.gauge("aifactory_engine_requests_waiting", **ENGINE) == 2

    clock.now += 0.2  # within the interval: accumulated, not sent
    stats.scheduler(waiting=1, running=3, kv_cache_usage=0.5, prefix_queries=6, prefix_hits=6)
    stats.iteration(generation_tokens=3, queue_times_s=[0.02, 0.5])
    stats.maybe_flush()
    assert sink.counter("aifactory_engine_generation_tokens", **ENGINE) == 3
    assert sink.gauge("aifactory_engine_requests_waiting", **ENGINE) == 2
    # Queue times are per finished request and go out at once.
    assert sink.observations("aifactory_queue_time_seconds", endpoint="demo", model="llama") == \
        [0.02, 0.5]

    # A flush is due at the end of the interval even if the engine reports nothing more.
    assert [delay for delay, _ in later] == [pytest.approx(0.8)]

    clock.now += 0.1  # the engine went idle: published without waiting for the interval
    stats.scheduler(waiting=0, running=0, kv_cache_usage=0.0, prefix_queries=0, prefix_hits=0)
    stats.iteration(generation_tokens=1, queue_times_s=[])
    stats.maybe_flush()
    assert sink.counter("aifactory_engine_generation_tokens", **ENGINE) == 7
    assert sink.counter("aifactory_engine_prefix_cache_queries", **ENGINE) == 16
    assert sink.counter("aifactory_engine_prefix_cache_hits", **ENGINE) == 10
    assert sink.gauge("aifactory_engine_requests_running", **ENGINE) == 0
    assert sink.gauge("aifactory_engine_kv_cache_usage_ratio", **ENGINE) == 0.0
    later[0][1]()  # the scheduled flush finds nothing new: counters stay
    assert sink.counter("aifactory_engine_generation_tokens", **ENGINE) == 7


def test_counts_held_back_go_out_with_the_scheduled_flush():
    sink, clock, later = FakeSink(), Clock(), []
    stats = engine_telemetry.EngineStats(engine_telemetry.EngineLabels("demo", "llama", "r1"),
                                         sink, flush_interval_s=1.0, clock=clock,
                                         schedule=lambda delay, fn: later.append(fn) or True)
    stats.scheduler(waiting=0, running=1, kv_cache_usage=0.1, prefix_queries=0, prefix_hits=0)
    stats.maybe_flush()
    stats.iteration(generation_tokens=5, queue_times_s=[])
    stats.maybe_flush()
    stats.iteration(generation_tokens=2, queue_times_s=[])
    stats.maybe_flush()
    assert len(later) == 1  # one pending flush, not one per step
    assert sink.counter("aifactory_engine_generation_tokens", **ENGINE) is None
    later[0]()
    assert sink.counter("aifactory_engine_generation_tokens", **ENGINE) == 7


def test_engine_without_scheduler_stats_sets_no_gauges():
    sink = FakeSink()
    stats = engine_telemetry.EngineStats(engine_telemetry.EngineLabels("demo", "llama", "r1"),
                                         sink)
    stats.iteration(generation_tokens=0, queue_times_s=[])
    stats.flush()
    assert sink.gauges == {} and sink.counters == {}


@pytest.mark.parametrize(("vllm_id", "gateway_id"), [
    ("chatcmpl-abc123", "abc123"),
    ("cmpl-abc123", "abc123"),
    ("cmpl-abc123_1", "abc123"),      # the second prompt of a batched completion
    ("chatcmpl-ab_cd", "ab_cd"),      # an underscore that is not a prompt index
    ("other", "other"),
    (None, None),
])
def test_gateway_request_id_from_vllms(vllm_id, gateway_id):
    assert engine_telemetry.gateway_request_id(vllm_id) == gateway_id


# -- tracing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "exporter"), [
    ({}, None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "otlp"),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
    ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, None),  # not installed: off rather than failing
    ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, None),
])
def test_which_exporter_the_environment_asks_for(env, exporter):
    assert tracing.wants_traces(env) == exporter


def test_configure_does_nothing_when_the_environment_does_not_ask():
    assert tracing.configure_tracing("aifactory", env={}) is False
    assert not tracing.active()
    # Off: the gateway makes no span and changes no body.
    assert telemetry.start_request_span({"traceparent": TRACEPARENT}, "chat") is None
    assert telemetry.with_trace_context(None, {"model": "m"}) == {"model": "m"}
    assert engine_telemetry.start_engine_span(None, "chat", "demo", "r") is None


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@dataclass
class Finished:
    """vLLM's FinishedRequestStats, the fields the phases are made of."""

    request_id: str
    queued_time: float
    prefill_time: float
    decode_time: float
    num_prompt_tokens: int
    num_generation_tokens: int
    num_cached_tokens: int = 0


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # The global provider can be set once per process; tests swap the tracer getter instead.
    original = tracing.tracer
    tracing.tracer = lambda: provider.get_tracer(tracing.TRACER_NAME)
    original_active = tracing.active
    tracing.active = lambda: True
    yield exporter
    tracing.tracer = original
    tracing.active = original_active


def test_gateway_span_continues_the_clients_trace_and_carries_it_to_the_engine(spans):
    span = telemetry.start_request_span({"traceparent": TRACEPARENT}, "chat")
    with telemetry.step(span, "auth"):
        pass
    telemetry.describe_request(span, "chat", "demo", {"max_tokens": 5, "temperature": 0.0},
                               "acme")
    body = telemetry.with_trace_context(span, {"model": "demo"})
    assert body["model"] == "demo" and tracing.TRACE_CONTEXT_FIELD in body

    engine_body, carrier = engine_telemetry.take_trace_context(body)
    assert engine_body == {"model": "demo"}
    pending = engine_telemetry.PendingSpans()
    engine_span = engine_telemetry.start_engine_span(carrier, "chat", "demo", "req1", pending)
    engine_telemetry.end_engine_span(engine_span, 200)
    stats = Finished("chatcmpl-req1", queued_time=0.01, prefill_time=0.02, decode_time=0.1,
                     num_prompt_tokens=9, num_generation_tokens=5)
    engine_telemetry.record_phases(pending.pop("req1"), stats, ended_ns=10**18)
    telemetry.describe_response(span, {"id": "chatcmpl-req1", "model": "demo",
                                       "choices": [{"finish_reason": "length"}]})
    telemetry.record_usage(span, Outcome.OK, 9, 5)
    telemetry.end_span(span, 200)
    telemetry.end_span(span, 200)  # a second end is ignored

    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert set(by_name) == {"auth", "chat demo", "engine chat demo", "queue", "prefill", "decode"}
    root = by_name["chat demo"]
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert format(root.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert {s.context.trace_id for s in by_name.values()} == {root.context.trace_id}
    assert by_name["auth"].parent.span_id == root.context.span_id
    engine = by_name["engine chat demo"]
    assert engine.parent.span_id == root.context.span_id
    for phase in ("queue", "prefill", "decode"):
        assert by_name[phase].parent.span_id == engine.context.span_id
    # The phases follow each other and last what vLLM measured.
    assert by_name["queue"].end_time == by_name["prefill"].start_time
    assert by_name["prefill"].end_time == by_name["decode"].start_time
    assert by_name["decode"].end_time - by_name["decode"].start_time == 100_000_000
    assert root.attributes["gen_ai.request.model"] == "demo"
    assert root.attributes["gen_ai.operation.name"] == "chat"
    assert root.attributes["gen_ai.request.max_tokens"] == 5
    assert root.attributes["gen_ai.response.id"] == "chatcmpl-req1"
    assert root.attributes["gen_ai.response.finish_reasons"] == ("length",)
    assert root.attributes["gen_ai.usage.input_tokens"] == 9
    assert root.attributes["gen_ai.usage.output_tokens"] == 5
    assert by_name["decode"].attributes["gen_ai.usage.output_tokens"] == 5
    assert by_name["prefill"].attributes["gen_ai.usage.input_tokens"] == 9


def test_a_malformed_traceparent_starts_a_new_trace(spans):
    span = telemetry.start_request_span({"traceparent": "00-zz-yy-01"}, "completion")
    telemetry.end_span(span, 400)
    (only,) = spans.get_finished_spans()
    assert only.parent is None and only.name == "text_completion"
    assert only.attributes["http.response.status_code"] == 400


def test_pending_engine_spans_are_bounded():
    pending = engine_telemetry.PendingSpans(capacity=2)
    for rid in ("a", "b", "c"):
        pending.add(rid, trace.INVALID_SPAN)
    assert pending.pop("a") is None  # the oldest was pushed out
    assert pending.pop("c") is trace.INVALID_SPAN
