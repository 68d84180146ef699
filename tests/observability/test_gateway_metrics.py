"""The gateway records each request's metrics where it finishes, with the figures of its usage
record: through the real app, the real tenancy store (SQLite) and local counters, with a
stand-in engine and a fake metric sink."""

from __future__ import annotations

import json

import httpx
import pytest

from observability.slo import SloSettings
from serving.engine.card import engine_card
from serving.engine.host import EngineReply
from serving.gateway import build_gateway_app
from serving.gateway.access import Access
from serving.gateway.telemetry import RequestMetrics
from serving.targets.local import LocalTarget
from serving.tenancy import LocalAdmissionCounters, Store, upgrade
from tests.observability.test_request_telemetry import FakeSink

USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def _event(body: dict) -> str:
    return "data: " + json.dumps(body, separators=(",", ":")) + "\n\n"  # as vLLM writes it


class ScriptedHost:
    """Stands in for EngineHost: three content events then usage when streaming, else a body."""

    class args:
        model = "/models/tiny-llama"

    max_model_len = 64

    def card(self) -> dict:
        return engine_card(self.args.model, self.max_model_len)

    async def handle(self, kind, body, request_id=None) -> EngineReply:
        if body.get("stream"):
            async def events():
                for text in ("a", "b", "c"):
                    yield _event({"id": "cmpl-1", "choices": [{"text": text}]})
                yield _event({"id": "cmpl-1", "choices": [], "usage": USAGE})
                yield "data: [DONE]\n\n"
            return EngineReply(200, stream=events())
        return EngineReply(200, body={"id": "cmpl-2", "choices": [], "usage": USAGE})

    async def check_health(self):
        return None


@pytest.fixture
def gateway(tmp_path):
    url = f"sqlite:///{tmp_path}/tenancy.db"
    upgrade(url)
    store = Store(url)
    store.create_tenant("t", slo=SloSettings(ttft_p95_ms=60_000, itl_p95_ms=60_000,
                                             objective=0.9))
    store.create_endpoint("m", owner="t")
    store.set_quota("t", requests_per_minute=2)
    sink = FakeSink()
    access = Access(store, LocalAdmissionCounters(), request_metrics=RequestMetrics(sink))
    app = build_gateway_app({"m": LocalTarget("m", ScriptedHost())}, access)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                               headers={"authorization": f"Bearer {store.create_key('t').plaintext}"})
    yield client, sink
    store.close()


LABELS = {"tenant": "t", "endpoint": "m", "model": "tiny-llama"}


async def test_streamed_plain_and_rejected_requests(gateway):
    client, sink = gateway
    streamed = await client.post("/v1/completions", json={"model": "m", "prompt": "x",
                                                          "stream": True})
    assert streamed.status_code == 200 and "usage" not in streamed.text  # not asked for
    plain = await client.post("/v1/completions", json={"model": "m", "prompt": "x"})
    assert plain.status_code == 200
    refused = await client.post("/v1/completions", json={"model": "m", "prompt": "x"})
    assert refused.status_code == 429

    assert sink.counter("aifactory_requests", **LABELS, outcome="ok") == 2
    assert sink.counter("aifactory_requests", **LABELS, outcome="rejected") == 1
    assert sink.counter("aifactory_rate_limited", **LABELS, code="rate_limit_exceeded") == 1
    # The engine's counts from the usage event, exactly as the ledger has them.
    assert sink.counter("aifactory_prompt_tokens", **LABELS) == 10
    assert sink.counter("aifactory_completion_tokens", **LABELS) == 6
    assert len(sink.observations("aifactory_request_duration_seconds", **LABELS)) == 2
    # Only the streamed request has token timing: one TTFT, one ITL (three events).
    assert len(sink.observations("aifactory_time_to_first_token_seconds", **LABELS)) == 1
    assert len(sink.observations("aifactory_inter_token_latency_seconds", **LABELS)) == 1
    assert sink.counter("aifactory_slo_requests", **LABELS, slo="met") == 1
    # The tenant's own targets, as stored.
    assert sink.gauge("aifactory_tenant_slo_target_seconds", tenant="t", sli="ttft") == 60.0
    assert sink.gauge("aifactory_tenant_slo_objective_ratio", tenant="t") == 0.9
    assert sink.gauge("aifactory_requests_in_flight", **LABELS) == 0


async def test_requests_refused_before_admission_are_not_counted(gateway):
    client, sink = gateway
    assert (await client.post("/v1/completions", json={"model": "other", "prompt": "x"})
            ).status_code == 404
    assert (await client.post("/v1/completions", json={"model": "m", "prompt": "x"},
                              headers={"authorization": "Bearer wrong"})).status_code == 401
    assert sink.counters == {} and sink.gauges == {}
