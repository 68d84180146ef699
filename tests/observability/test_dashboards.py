"""The Grafana dashboards: the committed JSON is what the code builds, every panel's query is
among `all_expressions()`, and every expression parses and names only metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from observability import queries
from observability.dashboards import build
from observability.metrics import SPECS, Kind
from observability.rules import build as rules

NAMES = sorted(build.DASHBOARDS)


@pytest.mark.parametrize("name", NAMES)
def test_the_committed_json_is_what_the_code_builds(name: str) -> None:
    assert build.path(name).read_text() == build.render(name), (
        f"{build.path(name)} is stale: python -m observability.dashboards.build")


def test_no_dashboard_json_is_left_without_its_builder() -> None:
    assert sorted(p.stem for p in build.DASHBOARDS_DIR.glob("*.json")) == NAMES


def committed_targets(name: str) -> list[str]:
    """The queries as Grafana will read them: from the committed file, not from the code."""
    model = json.loads(build.path(name).read_text())
    return [target["expr"] for panel in model["panels"] for target in panel.get("targets", [])]


@pytest.mark.parametrize("name", NAMES)
def test_every_panel_query_is_in_all_expressions(name: str) -> None:
    targets = committed_targets(name)
    assert targets, "a dashboard without queries"
    expressions = set(queries.all_expressions())
    missing = [t for t in targets if queries.runnable(t) not in expressions]
    assert missing == []


def test_all_expressions_covers_every_rule() -> None:
    expressions = queries.all_expressions()
    assert len(expressions) == len(set(expressions))
    committed = yaml.safe_load(rules.RULES_FILE.read_text())
    for group in committed["groups"]:
        for rule in group["rules"]:
            assert rule["expr"] in expressions, rule.get("record") or rule.get("alert")


def test_the_dashboards_show_what_operators_and_tenants_ask() -> None:
    titles = {name: {panel["title"] for panel in json.loads(build.path(name).read_text())["panels"]}
              for name in NAMES}
    assert {"Allocation by endpoint", "Utilisation", "Replicas: target, actual, guaranteed",
            "Autoscaler actions by reason (per hour)"} <= titles["operator-overview"]
    assert {"Time to first token p95 vs target", "Inter-token latency p95 vs target",
            "Latency error budget left (30d)", "Rate-limit rejections",
            "Tokens per second"} <= titles["tenant-sla"]
    assert {"Requests running and waiting", "KV-cache usage",
            "Generated tokens per second", "Engine start by phase (p95)"} <= titles["engine-health"]


def test_expressions_name_only_metrics_and_rules_that_exist() -> None:
    exposed = {spec.exposed for spec in SPECS}
    exposed |= {f"{spec.exposed}_{part}" for spec in SPECS if spec.kind is Kind.HISTOGRAM
                for part in ("bucket", "sum", "count")}
    recorded = {e.name for e in queries.rule_expressions() if e.kind == "record"}
    for expr in queries.all_expressions():
        for metric in re.findall(r"\bray_[a-z_]+", expr):
            assert metric in exposed, (metric, expr)
        for rule in re.findall(r"\btenant:[a-z_0-9:]+", expr):
            assert rule in recorded, (rule, expr)


def test_every_expression_parses(tmp_path: Path) -> None:
    """promtool parses each expression as a recording rule: a syntax error fails here, not
    first in Grafana."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install -y prometheus (.ci/run does)"
    expressions = queries.all_expressions()
    rules_file = tmp_path / "all.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "all", "rules": [
        {"record": f"check:expression_{i}", "expr": e} for i, e in enumerate(expressions)]}]}))
    checked = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True,
                             text=True, timeout=120, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in checked.stdout


def test_a_template_variable_without_an_all_value_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown template variable"):
        queries.runnable('up{job=~"$job"}')


# Every query returns data from series shaped like the platform's: one healthy tenant's traffic


LABEL_VALUES = {"tenant": "acme", "endpoint": "chat", "model": "m", "replica": "r1",
                "accelerator": "cpu", "reason": "scale_up", "code": "rate_limit_exceeded",
                "phase": "weights"}
# Labels with values that matter to the queries: every value a query selects on is present.
LABEL_CHOICES = {"outcome": {"ok": 99, "error": 1, "rejected": 5, "client_cancelled": 2},
                 "slo": {"met": 999, "missed": 1}, "sli": {"ttft": 2.0, "itl": 0.2},
                 "state": {"queued": 40, "running": 4}}
GAUGES = {"aifactory_tenant_slo_objective_ratio": 0.99,
          "aifactory_engine_kv_cache_usage_ratio": 0.4,
          "aifactory_partition_capacity_accelerators": 8, "aifactory_endpoint_guaranteed_replicas": 1}


# Counters that stay flat on a healthy platform (any increase is an alert).
FLAT_WHEN_HEALTHY = {"aifactory_ledger_dead_letters"}


def _labels(values: dict[str, str]) -> str:
    # Ray's per-process label rides along, as it does on the real series.
    return "{" + ",".join(f'{k}="{v}"' for k, v in {**values, "WorkerId": "w1"}.items()) + "}"


def synthetic_series() -> list[dict[str, str]]:
    series = []
    for spec in SPECS:
        fixed = {k: LABEL_VALUES[k] for k in spec.labels if k in LABEL_VALUES}
        choices = [(k, LABEL_CHOICES[k]) for k in spec.labels if k in LABEL_CHOICES]
        variants = [({}, 10.0)] if not choices else [
            ({choices[0][0]: value}, per_minute) for value, per_minute in choices[0][1].items()]
        for extra, per_minute in variants:
            labels = {**fixed, **extra}
            if spec.kind is Kind.COUNTER:
                rate = 0 if spec.name in FLAT_WHEN_HEALTHY else per_minute
                series.append({"series": spec.exposed + _labels(labels),
                               "values": f"0+{rate:g}x20"})
            elif spec.kind is Kind.GAUGE:
                value = per_minute if choices else GAUGES.get(spec.name, 1)
                series.append({"series": spec.exposed + _labels(labels),
                               "values": f"{value:g}x20"})
            else:  # a histogram: 10 observations a minute, all in its fourth bucket
                for le in [*spec.buckets, "+Inf"]:
                    per = 10 if le == "+Inf" or spec.buckets.index(le) >= 3 else 0
                    series.append({"series": f"{spec.exposed}_bucket"
                                             + _labels({**labels, "le": str(le)}),
                                   "values": f"0+{per}x20"})
                series.append({"series": f"{spec.exposed}_count" + _labels(labels),
                               "values": "0+10x20"})
                series.append({"series": f"{spec.exposed}_sum" + _labels(labels),
                               "values": "0+1x20"})
    return series


def test_every_query_returns_data_and_no_alert_fires_on_healthy_series(tmp_path: Path) -> None:
    """promtool evaluates the rules over synthetic series of every metric in the catalog, then
    each recording rule and panel query must return at least one series (`count(...)` is 1
    with one tenant, endpoint and replica), and no alert may fire."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install -y prometheus (.ci/run does)"
    checked = [e for e in queries.catalog() if e.kind != "alert"]
    alerts = sorted({e.name for e in queries.catalog() if e.kind == "alert"})
    spec = {
        "rule_files": [str(rules.RULES_FILE)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": synthetic_series(),
            "promql_expr_test": [
                {"expr": f"sgn(count({e.expr}))", "eval_time": "10m",
                 "exp_samples": [{"labels": "{}", "value": 1}]} for e in checked],
            "alert_rule_test": [{"eval_time": "10m", "alertname": name, "exp_alerts": []}
                                for name in alerts],
        }],
    }
    test_file = tmp_path / "every_query_test.yml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    tested = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True,
                            text=True, timeout=300, check=False)
    assert tested.returncode == 0, tested.stdout[-5000:] + tested.stderr[-2000:]
