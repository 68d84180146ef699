"""The metric catalog: names as PromQL sees them, labels kept low-cardinality, recording
harmless outside Ray."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from observability import metrics

# The exposed names other components write PromQL against (/tmp/coord contract, README).
CONTRACT = {
    "aifactory_requests": "ray_aifactory_requests_total",
    "aifactory_rate_limited": "ray_aifactory_rate_limited_total",
    "aifactory_time_to_first_token_seconds": "ray_aifactory_time_to_first_token_seconds",
    "aifactory_inter_token_latency_seconds": "ray_aifactory_inter_token_latency_seconds",
    "aifactory_request_duration_seconds": "ray_aifactory_request_duration_seconds",
    "aifactory_queue_time_seconds": "ray_aifactory_queue_time_seconds",
    "aifactory_prompt_tokens": "ray_aifactory_prompt_tokens_total",
    "aifactory_completion_tokens": "ray_aifactory_completion_tokens_total",
    "aifactory_requests_in_flight": "ray_aifactory_requests_in_flight",
    "aifactory_slo_requests": "ray_aifactory_slo_requests_total",
    "aifactory_tenant_slo_target_seconds": "ray_aifactory_tenant_slo_target_seconds",
    "aifactory_tenant_slo_objective_ratio": "ray_aifactory_tenant_slo_objective_ratio",
    "aifactory_engine_requests_waiting": "ray_aifactory_engine_requests_waiting",
    "aifactory_engine_requests_running": "ray_aifactory_engine_requests_running",
    "aifactory_engine_kv_cache_usage_ratio": "ray_aifactory_engine_kv_cache_usage_ratio",
    "aifactory_engine_prefix_cache_queries": "ray_aifactory_engine_prefix_cache_queries_total",
    "aifactory_engine_prefix_cache_hits": "ray_aifactory_engine_prefix_cache_hits_total",
    "aifactory_engine_generation_tokens": "ray_aifactory_engine_generation_tokens_total",
    "aifactory_engine_start_phase_seconds": "ray_aifactory_engine_start_phase_seconds",
    "aifactory_partition_capacity_accelerators": "ray_aifactory_partition_capacity_accelerators",
    "aifactory_endpoint_allocated_accelerators": "ray_aifactory_endpoint_allocated_accelerators",
    "aifactory_endpoint_guaranteed_replicas": "ray_aifactory_endpoint_guaranteed_replicas",
    "aifactory_endpoint_replicas_target": "ray_aifactory_endpoint_replicas_target",
    "aifactory_endpoint_replicas_actual": "ray_aifactory_endpoint_replicas_actual",
    "aifactory_autoscaler_decisions": "ray_aifactory_autoscaler_decisions_total",
    "aifactory_ledger_dead_letters": "ray_aifactory_ledger_dead_letters_total",
    "aifactory_batch_lines": "ray_aifactory_batch_lines_total",
    "aifactory_batch_prompt_tokens": "ray_aifactory_batch_prompt_tokens_total",
    "aifactory_batch_completion_tokens": "ray_aifactory_batch_completion_tokens_total",
    "aifactory_batch_lines_pending": "ray_aifactory_batch_lines_pending",
}

ALLOWED_LABELS = {"tenant", "endpoint", "model", "outcome", "code", "slo", "sli", "replica",
                  "accelerator", "reason", "state", "phase"}


def test_every_contract_metric_is_defined_once_with_its_exposed_name():
    assert [s.name for s in metrics.SPECS] == list(dict.fromkeys(s.name for s in metrics.SPECS))
    assert {s.name: s.exposed for s in metrics.SPECS} == CONTRACT


@pytest.mark.parametrize("spec", metrics.SPECS, ids=lambda s: s.name)
def test_names_units_and_labels(spec):
    assert re.fullmatch(r"aifactory_[a-z0-9_]+", spec.name)
    assert not spec.name.endswith("_total")  # Ray adds it to counters
    assert set(spec.labels) <= ALLOWED_LABELS  # never a key, request or user id
    if spec.kind is metrics.Kind.HISTOGRAM:
        assert spec.name.endswith("_seconds")
        assert list(spec.buckets) == sorted(set(spec.buckets)) and spec.buckets[0] > 0
    else:
        assert spec.buckets == ()


def test_buckets_suit_llm_latencies():
    # 10 ms .. 2 min for first token and whole requests; 1 ms .. 2.5 s between tokens.
    assert metrics.LATENCY_BUCKETS_S[0] == 0.01 and metrics.LATENCY_BUCKETS_S[-1] == 120
    assert metrics.INTER_TOKEN_BUCKETS_S[0] == 0.001 and metrics.INTER_TOKEN_BUCKETS_S[-1] == 2.5


@pytest.mark.parametrize(("model", "label"), [
    ("/home/me/.aifactory/models/demo", "demo"),
    ("/data/models/llama-3-8b/", "llama-3-8b"),
    ("./models/qwen", "qwen"),
    ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),
    ("gpt2", "gpt2"),
    ("", "unknown"),
    (None, "unknown"),
])
def test_model_label(model, label):
    assert metrics.model_label(model) == label


def test_recording_outside_ray_does_nothing_and_unknown_names_fail():
    metrics.inc("aifactory_requests", {"tenant": "t", "endpoint": "e", "model": "m",
                                       "outcome": "ok"})
    metrics.observe("aifactory_time_to_first_token_seconds",
                    {"tenant": "t", "endpoint": "e", "model": "m"}, 0.1)
    metrics.set_gauge("aifactory_requests_in_flight", {"tenant": "t", "endpoint": "e",
                                                       "model": "m"}, 1)
    with pytest.raises(KeyError):
        metrics.metric("aifactory_no_such_metric")


def test_importing_the_catalog_does_not_import_ray():
    code = "import sys, observability.metrics; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_service_discovery_lists_live_nodes_metrics_agents(tmp_path):
    import json

    from observability.discovery import node_targets, write_service_discovery

    nodes = [
        {"NodeManagerAddress": "10.0.0.2", "MetricsExportPort": 8080, "Alive": True},
        {"NodeManagerAddress": "10.0.0.1", "MetricsExportPort": 8081, "Alive": True},
        {"NodeManagerAddress": "10.0.0.3", "MetricsExportPort": 8080, "Alive": False},  # gone
    ]
    path = tmp_path / "sd.json"
    write_service_discovery(node_targets(nodes), path)
    # The format of Ray's own file, which prometheus.yml's file_sd_configs reads.
    assert json.loads(path.read_text()) == [
        {"labels": {"job": "ray"}, "targets": ["10.0.0.1:8081", "10.0.0.2:8080"]}]
    assert [p.name for p in tmp_path.iterdir()] == ["sd.json"]  # no partial file left
