"""The platform's metrics after known traffic, read from every target of Ray's Prometheus
service-discovery file: request counts, token sums and histogram counts exact per tenant and
endpoint, engine metrics from vLLM's own stats, and nothing at all for a tenant without
traffic. Other tests share the platform, so figures are deltas over a settled baseline."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e import ray_metrics
from tests.e2e.conftest import openai_client
from tests.e2e.ray_metrics import total
from tests.platform_helpers import inside_one_minute_window

MESSAGES = [{"role": "user", "content": "Say something about metrics."}]
MAX_TOKENS = 6
# Generate exactly MAX_TOKENS even when the demo model's noise hits its end-of-text token.
FIXED_LENGTH = {"ignore_eos": True}

REQUESTS = "ray_aifactory_requests_total"
PROMPT = "ray_aifactory_prompt_tokens_total"
COMPLETION = "ray_aifactory_completion_tokens_total"
TTFT = "ray_aifactory_time_to_first_token_seconds"
ITL = "ray_aifactory_inter_token_latency_seconds"
DURATION = "ray_aifactory_request_duration_seconds"
QUEUE = "ray_aifactory_queue_time_seconds"
SLO = "ray_aifactory_slo_requests_total"
GENERATED = "ray_aifactory_engine_generation_tokens_total"


def _stream_chat(client, model: str) -> dict:
    usage = None
    for chunk in client.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True,
            stream_options={"include_usage": True}, extra_body=FIXED_LENGTH):
        if chunk.usage is not None:
            usage = chunk.usage
    return {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens}


def _stream_completion(client, model: str) -> dict:
    usage = None
    for chunk in client.completions.create(
            model=model, prompt="metrics are", max_tokens=MAX_TOKENS, stream=True,
            stream_options={"include_usage": True}, extra_body=FIXED_LENGTH):
        if chunk.usage is not None:
            usage = chunk.usage
    return {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens}


def _completion(client, model: str) -> dict:
    done = client.completions.create(model=model, prompt="counting tokens", max_tokens=MAX_TOKENS,
                                     extra_body=FIXED_LENGTH)
    return {"prompt": done.usage.prompt_tokens, "completion": done.usage.completion_tokens}


def _delta(after, before, name, **labels) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


@pytest.fixture(scope="module")
def traffic(platform, store, keys):
    """Known traffic from two tenants over both endpoints, plus a throttled and an idle tenant;
    returns the settled scrape before, the scrape after, and what the clients saw."""
    throttled = f"m-{uuid.uuid4().hex[:8]}"
    store.create_tenant(throttled)
    store.grant("demo-remote", throttled)
    store.set_quota(throttled, requests_per_minute=1)
    throttled_key = store.create_key(throttled).plaintext
    idle = f"m-{uuid.uuid4().hex[:8]}"
    store.create_tenant(idle)
    store.grant("demo-remote", idle)
    store.create_key(idle)

    before = ray_metrics.settled()
    acme, globex = openai_client(platform, keys["acme"]), openai_client(platform, keys["globex"])
    seen = {
        ("acme", "demo"): [_stream_chat(acme, "demo") for _ in range(3)],
        ("acme", "demo-remote"): [_completion(acme, "demo-remote") for _ in range(2)],
        ("globex", "demo-remote"): [_stream_completion(globex, "demo-remote") for _ in range(2)],
    }
    inside_one_minute_window(15)
    seen[(throttled, "demo-remote")] = [_completion(openai_client(platform, throttled_key),
                                                    "demo-remote")]
    refused = httpx.post(platform["url"] + "/v1/completions", timeout=60,
                         headers={"authorization": f"Bearer {throttled_key}"},
                         json={"model": "demo-remote", "prompt": "again", "max_tokens": 2})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"

    def arrived(samples) -> bool:
        return all(_delta(samples, before, REQUESTS, tenant=t, endpoint=e, outcome="ok")
                   >= len(runs) for (t, e), runs in seen.items()) and \
            total(samples, "ray_aifactory_rate_limited_total", tenant=throttled) >= 1

    ray_metrics.wait_for(arrived)
    # Settled again: anything still on its way would show up as a mismatch below.
    after = ray_metrics.settled()
    return {"before": before, "after": after, "seen": seen, "throttled": throttled, "idle": idle}


CASES = [("acme", "demo", True), ("acme", "demo-remote", False), ("globex", "demo-remote", True)]


@pytest.mark.parametrize(("tenant", "endpoint", "streamed"), CASES)
def test_request_counts_and_token_sums_are_exact(traffic, tenant, endpoint, streamed):
    before, after, runs = traffic["before"], traffic["after"], traffic["seen"][(tenant, endpoint)]
    labels = {"tenant": tenant, "endpoint": endpoint, "model": "demo"}
    assert _delta(after, before, REQUESTS, **labels, outcome="ok") == len(runs)
    for outcome in ("error", "rejected", "client_cancelled"):
        assert _delta(after, before, REQUESTS, **labels, outcome=outcome) == 0
    assert _delta(after, before, PROMPT, **labels) == sum(r["prompt"] for r in runs)
    assert _delta(after, before, COMPLETION, **labels) == sum(r["completion"] for r in runs)
    assert all(r["completion"] == MAX_TOKENS for r in runs)
    assert _delta(after, before, DURATION + "_count", **labels) == len(runs)
    # Token timing exists only where tokens were streamed; then every request has both.
    timed = len(runs) if streamed else 0
    assert _delta(after, before, TTFT + "_count", **labels) == timed
    assert _delta(after, before, TTFT + "_bucket", **labels, le="+Inf") == timed
    assert _delta(after, before, ITL + "_count", **labels) == timed
    verdicts = (_delta(after, before, SLO, **labels, slo="met")
                + _delta(after, before, SLO, **labels, slo="missed"))
    assert verdicts == timed
    assert total(after, "ray_aifactory_requests_in_flight", **labels) == 0


def test_histograms_have_the_catalog_buckets(traffic):
    from observability.metrics import INTER_TOKEN_BUCKETS_S, LATENCY_BUCKETS_S

    after = traffic["after"]
    for name, buckets in ((TTFT, LATENCY_BUCKETS_S), (ITL, INTER_TOKEN_BUCKETS_S),
                          (QUEUE, LATENCY_BUCKETS_S)):
        les = {lab["le"] for lab in ray_metrics.series(after, name + "_bucket")}
        assert {float(le) for le in les - {"+Inf"}} == set(buckets) and "+Inf" in les


def test_rate_limited_requests_are_counted_by_code(traffic):
    after, throttled = traffic["after"], traffic["throttled"]
    labels = {"tenant": throttled, "endpoint": "demo-remote", "model": "demo"}
    assert total(after, "ray_aifactory_rate_limited_total", **labels,
                 code="rate_limit_exceeded") == 1
    assert total(after, REQUESTS, **labels, outcome="rejected") == 1
    assert total(after, REQUESTS, **labels, outcome="ok") == 1
    # A refused request made no latency observation and used no tokens.
    assert total(after, DURATION + "_count", **labels) == 1
    assert total(after, PROMPT, **labels) == traffic["seen"][(traffic["throttled"],
                                                              "demo-remote")][0]["prompt"]


def test_a_tenant_without_traffic_has_no_series_at_all(traffic):
    assert not [lab for _, lab, _ in traffic["after"] if lab.get("tenant") == traffic["idle"]]


def test_tenant_targets_are_published_beside_the_verdicts(traffic, store):
    after = traffic["after"]
    for tenant in ("acme", "globex"):
        slo = store.get_tenant(tenant).slo
        for sli, target in (("ttft", slo.ttft_p95_s), ("itl", slo.itl_p95_s)):
            values = {v for n, lab, v in after if n == "ray_aifactory_tenant_slo_target_seconds"
                      and lab.get("tenant") == tenant and lab.get("sli") == sli}
            assert values == {target}
        objective = {v for n, lab, v in after if n == "ray_aifactory_tenant_slo_objective_ratio"
                     and lab.get("tenant") == tenant}
        assert objective == {slo.objective}


def test_engine_metrics_come_from_vllms_own_stats(traffic):
    before, seen = traffic["before"], traffic["seen"]
    for endpoint in ("demo", "demo-remote"):
        served = [r for (_, e), runs in seen.items() if e == endpoint for r in runs]
        labels = {"endpoint": endpoint, "model": "demo"}

        tokens = sum(r["completion"] for r in served)
        # Counters held back between flushes go out within a second of the engine going quiet.
        later = ray_metrics.wait_for(
            lambda s, labels=labels, tokens=tokens:
                _delta(s, before, GENERATED, **labels) >= tokens)
        assert _delta(later, before, GENERATED, **labels) == tokens
        assert _delta(later, before, QUEUE + "_count", **labels) == len(served)
        queries = _delta(later, before, "ray_aifactory_engine_prefix_cache_queries_total", **labels)
        hits = _delta(later, before, "ray_aifactory_engine_prefix_cache_hits_total", **labels)
        assert queries > 0 and 0 <= hits <= queries
        for gauge in ("ray_aifactory_engine_requests_waiting", "ray_aifactory_engine_requests_running",
                      "ray_aifactory_engine_kv_cache_usage_ratio"):
            found = ray_metrics.series(later, gauge, **labels)
            assert found and all(lab["replica"] for lab in found), gauge
        # vLLM's stats after the last step show an idle engine; no stale "running" is left.
        assert total(later, "ray_aifactory_engine_requests_running", **labels) == 0
        assert total(later, "ray_aifactory_engine_requests_waiting", **labels) == 0
        usage = [v for n, lab, v in later
                 if n == "ray_aifactory_engine_kv_cache_usage_ratio" and lab["endpoint"] == endpoint]
        assert all(0.0 <= v <= 1.0 for v in usage)


def test_counters_are_exported_once_without_the_legacy_gauge(traffic):
    names = {n for n, _, _ in traffic["after"]}
    assert REQUESTS in names
    assert "ray_aifactory_requests" not in names  # RAY_EXPORT_COUNTER_AS_GAUGE=0
