"""A trace from the client's W3C `traceparent` to the engine's queue, prefill and decode,
with real parts: the gateway app, the real tenancy store (SQLite) and a real vLLM engine
(EngineHost, colocated as on the platform), all in this process so an in-memory exporter sees
every span. (On the platform the engine replica's spans go to the OTLP exporter its OTEL_*
variables name; the hop between replicas carries the same W3C carrier tested here.)"""

from __future__ import annotations

import json

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from observability import tracing
from serving.engine.host import EngineHost
from serving.targets.local import LocalTarget
from serving.gateway import build_gateway_app
from serving.gateway.access import Access
from serving.tenancy import LocalAdmissionCounters, Store, upgrade

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
# In-process executor, explicitly: with Ray initialised vLLM would otherwise try Ray actors.
ENGINE_ARGS = {"max_model_len": 512, "dtype": "bfloat16", "kv_cache_memory_bytes": 134217728,
               "distributed_executor_backend": "uni", "enforce_eager": True}


@pytest.fixture(scope="module")
def exporter():
    """An SDK provider with an in-memory exporter, in place of the process's (no-op) one."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    saved = tracing.tracer, tracing.active
    tracing.tracer = lambda: provider.get_tracer(tracing.TRACER_NAME)
    tracing.active = lambda: True
    yield spans
    tracing.tracer, tracing.active = saved


@pytest.fixture(scope="module")
async def gateway(exporter, tmp_path_factory):
    from deployments.demo_model import write_demo_model

    import ray

    # A test package before this one may have left this process connected to a Ray cluster
    # (now gone): vLLM would look there for workers and wait.
    if ray.is_initialized():
        ray.shutdown()
    tmp = tmp_path_factory.mktemp("tracing")
    model = write_demo_model(tmp / "demo")
    host = await EngineHost.start(str(model), "demo", ENGINE_ARGS)
    url = f"sqlite:///{tmp}/tenancy.db"
    upgrade(url)
    store = Store(url)
    store.create_tenant("acme")
    store.create_endpoint("demo", owner="acme")
    key = store.create_key("acme").plaintext
    app = build_gateway_app({"demo": LocalTarget("demo", host)},
                            Access(store, LocalAdmissionCounters()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                                 headers={"authorization": f"Bearer {key}"},
                                 timeout=120) as client:
        yield client
    store.close()
    host.shutdown()


def _spans_of(exporter, trace_id: str) -> dict:
    return {s.name: s for s in exporter.get_finished_spans()
            if format(s.context.trace_id, "032x") == trace_id}


@pytest.mark.parametrize("stream", [True, False])
async def test_the_clients_trace_reaches_the_engine_phases(gateway, exporter, stream):
    exporter.clear()
    resp = await gateway.post("/v1/chat/completions", headers={"traceparent": TRACEPARENT}, json={
        "model": "demo", "max_tokens": 5, "stream": stream, "ignore_eos": True,
        "messages": [{"role": "user", "content": "trace me"}]})
    assert resp.status_code == 200, resp.text
    if stream:
        events = [json.loads(line[6:]) for line in resp.text.splitlines()
                  if line.startswith("data: {")]
        response_id = events[0]["id"]
    else:
        response_id = resp.json()["id"]

    spans = _spans_of(exporter, TRACE_ID)
    assert {"auth", "routing", "admission", "chat demo", "engine chat demo",
            "queue", "prefill", "decode"} <= set(spans), sorted(spans)
    root, engine = spans["chat demo"], spans["engine chat demo"]
    assert format(root.parent.span_id, "016x") == CLIENT_SPAN  # the client's span is the parent
    for step in ("auth", "routing", "admission", "engine chat demo"):
        assert spans[step].parent.span_id == root.context.span_id, step
    for phase in ("queue", "prefill", "decode"):
        assert spans[phase].parent.span_id == engine.context.span_id, phase
    assert spans["queue"].end_time <= spans["prefill"].start_time + 1
    assert spans["prefill"].end_time <= spans["decode"].start_time + 1

    attrs = root.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "demo"
    assert attrs["gen_ai.request.max_tokens"] == 5
    assert attrs["gen_ai.response.id"] == response_id
    assert attrs["gen_ai.usage.output_tokens"] == 5
    assert attrs["gen_ai.usage.input_tokens"] == spans["prefill"].attributes[
        "gen_ai.usage.input_tokens"] > 0
    assert spans["decode"].attributes["gen_ai.usage.output_tokens"] == 5
    assert attrs["aifactory.tenant"] == "acme" and attrs["http.response.status_code"] == 200
    # Nothing that identifies a key or a user is put on a span.
    assert not [k for s in spans.values() for k in s.attributes if "key" in k or "user" in k]


async def test_without_a_traceparent_the_gateway_starts_the_trace(gateway, exporter):
    exporter.clear()
    resp = await gateway.post("/v1/completions", json={"model": "demo", "prompt": "hi",
                                                       "max_tokens": 2})
    assert resp.status_code == 200
    roots = [s for s in exporter.get_finished_spans() if s.name == "text_completion demo"]
    assert len(roots) == 1 and roots[0].parent is None
    engine = [s for s in exporter.get_finished_spans() if s.name == "engine text_completion demo"]
    assert engine[0].context.trace_id == roots[0].context.trace_id


async def test_a_refused_request_ends_its_span_with_the_status(gateway, exporter):
    exporter.clear()
    resp = await gateway.post("/v1/completions", headers={"authorization": "Bearer nope"},
                              json={"model": "demo", "prompt": "hi"})
    assert resp.status_code == 401
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "text_completion"]
    assert span.attributes["http.response.status_code"] == 401


def test_responses_and_embeddings_are_named_as_opentelemetry_names_them():
    from observability.tracing import GEN_AI_OPERATION_NAME, GEN_AI_REQUEST_MAX_TOKENS
    from observability.tracing import request_attributes

    responses = request_attributes("responses", "demo", {"max_output_tokens": 7})
    assert responses[GEN_AI_OPERATION_NAME] == "chat"
    assert responses[GEN_AI_REQUEST_MAX_TOKENS] == 7
    assert request_attributes("embedding", "e", {})[GEN_AI_OPERATION_NAME] == "embeddings"


@pytest.mark.parametrize("kind", ["pooling", "score", "rerank"])
def test_vllms_pooling_routes_keep_their_own_names(kind):
    """GenAI's well-known operations (chat, embeddings, text_completion, ...) name none of
    them, and a custom value is what the convention allows then."""
    from observability.tracing import GEN_AI_OPERATION_NAME, request_attributes

    assert request_attributes(kind, "e", {})[GEN_AI_OPERATION_NAME] == kind
