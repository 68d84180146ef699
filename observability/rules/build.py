"""The Prometheus rules, written as code and committed as YAML (`aifactory.rules.yml`).

Recording rules name the SLIs per tenant over the windows the burn-rate alerts read; the
alerts follow the SRE workbook's multi-window, multi-burn-rate pattern per tenant SLO, plus an
endpoint held below its guaranteed replicas and an engine that stopped making progress.
Regenerate with `python -m observability.rules.build`; a test fails when the YAML drifts.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from observability.metrics import exposed_name

RULES_FILE = Path(__file__).with_name("aifactory.rules.yml")

REQUESTS = exposed_name("aifactory_requests")
SLO_REQUESTS = exposed_name("aifactory_slo_requests")
OBJECTIVE = exposed_name("aifactory_tenant_slo_objective_ratio")
TTFT = exposed_name("aifactory_time_to_first_token_seconds")
ITL = exposed_name("aifactory_inter_token_latency_seconds")
IN_FLIGHT = exposed_name("aifactory_requests_in_flight")
WAITING = exposed_name("aifactory_engine_requests_waiting")
RUNNING = exposed_name("aifactory_engine_requests_running")
GENERATED = exposed_name("aifactory_engine_generation_tokens")
GUARANTEED = exposed_name("aifactory_endpoint_guaranteed_replicas")
ACTUAL = exposed_name("aifactory_endpoint_replicas_actual")
DEAD_LETTERS = exposed_name("aifactory_ledger_dead_letters")

# Every window a burn-rate alert reads (long and short windows of the four pairs below).
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# Availability counts only what the platform answered: rejections are the tenant's own
# quota at work and cancellations the client's choice; errors that are no platform fault (the
# tenant's bad request, the documented overload refusal) carry their class as their outcome
# label (client_error, overloaded). The SLA report counts the same way.
ANSWERED = 'outcome=~"ok|error"'

# Recording rule names (level:metric:operations, Prometheus's convention).
ERROR_BUDGET = "tenant:aifactory_slo_error_budget:ratio"


def request_rate(window: str) -> str:
    return f"tenant:aifactory_requests:rate{window}"


def error_ratio(window: str) -> str:
    return f"tenant:aifactory_requests_errors:ratio_rate{window}"


def slo_missed_ratio(window: str) -> str:
    return f"tenant:aifactory_slo_requests_missed:ratio_rate{window}"


TTFT_P95 = "tenant:aifactory_time_to_first_token_seconds:p95_rate5m"
ITL_P95 = "tenant:aifactory_inter_token_latency_seconds:p95_rate5m"


@dataclass(frozen=True)
class BurnWindow:
    """Alert when the bad-event ratio over both windows exceeds `factor` x the error budget:
    e.g. 14.4 x 1% over 1h spends 2% of a 30-day budget in that hour."""

    factor: float
    long: str
    short: str


# The SRE workbook's table ("Alerting on SLOs", multiwindow, multi-burn-rate alerts).
PAGE = (BurnWindow(14.4, "1h", "5m"), BurnWindow(6, "6h", "30m"))
TICKET = (BurnWindow(3, "1d", "2h"), BurnWindow(1, "3d", "6h"))


def _selector(metric: str, matcher: str) -> str:
    return f"{metric}{{{matcher}}}" if matcher else metric


def _ratio(metric: str, bad: str, total: str, window: str) -> str:
    """Bad over total per tenant. A tenant with traffic but no bad series yet gets a real 0
    (the `or`); a tenant without traffic gets no sample at all rather than a made-up 0."""
    bad_rate = f"sum by (tenant) (rate({_selector(metric, bad)}[{window}]))"
    total_rate = f"sum by (tenant) (rate({_selector(metric, total)}[{window}]))"
    return f"(\n  {bad_rate}\n  or 0 * {total_rate}\n)\n/ ({total_rate} > 0)"


def _p95(histogram: str) -> str:
    return f"histogram_quantile(0.95, sum by (tenant, le) (rate({histogram}_bucket[5m])))"


def sli_rules() -> list[dict[str, str]]:
    rules = []
    for window in WINDOWS:
        rules += [
            {"record": request_rate(window),
             "expr": f"sum by (tenant) (rate({REQUESTS}[{window}]))"},
            {"record": error_ratio(window),
             "expr": _ratio(REQUESTS, 'outcome="error"', ANSWERED, window)},
            {"record": slo_missed_ratio(window),
             "expr": _ratio(SLO_REQUESTS, 'slo="missed"', "", window)},
        ]
    rules += [
        {"record": TTFT_P95, "expr": _p95(TTFT)},
        {"record": ITL_P95, "expr": _p95(ITL)},
        # Every gateway process sets the gauge; they agree, so max picks one.
        {"record": ERROR_BUDGET, "expr": f"1 - max by (tenant) ({OBJECTIVE})"},
    ]
    return rules


def _burn(ratio: Callable[[str], str], pairs: tuple[BurnWindow, ...]) -> str:
    clauses = [
        f"(\n  {ratio(p.long)} > on (tenant) ({p.factor:g} * {ERROR_BUDGET})\n"
        f"  and\n  {ratio(p.short)} > on (tenant) ({p.factor:g} * {ERROR_BUDGET})\n)"
        for p in pairs]
    return "\nor\n".join(clauses)


def _budget_alert(name: str, sli: str, what: str, ratio: Callable[[str], str], severity: str,
                  pairs: tuple[BurnWindow, ...]) -> dict[str, Any]:
    windows = ", or ".join(f"{p.factor:g}x the budget over {p.long} and {p.short}"
                            for p in pairs)
    return {
        "alert": name,
        "expr": _burn(ratio, pairs),
        "labels": {"severity": severity, "sli": sli},
        "annotations": {
            "summary": f"Tenant {{{{ $labels.tenant }}}} is spending its {sli} error budget "
                       f"too fast ({severity})",
            "description": f"{{{{ $value | humanizePercentage }}}} of tenant "
                           f"{{{{ $labels.tenant }}}}'s requests {what} over the long window "
                           f"(alerting at {windows}; the budget is 1 - objective).",
        },
    }


def slo_alerts() -> list[dict[str, Any]]:
    latency = "missed the latency targets (TTFT and ITL p95)"
    return [
        _budget_alert("AIFactoryTenantLatencyBudgetBurn", "latency", latency, slo_missed_ratio,
                      "page", PAGE),
        _budget_alert("AIFactoryTenantLatencyBudgetBurn", "latency", latency, slo_missed_ratio,
                      "ticket", TICKET),
        _budget_alert("AIFactoryTenantAvailabilityBudgetBurn", "availability", "failed",
                      error_ratio, "page", PAGE),
        _budget_alert("AIFactoryTenantAvailabilityBudgetBurn", "availability", "failed",
                      error_ratio, "ticket", TICKET),
    ]


def capacity_alerts() -> list[dict[str, Any]]:
    # Demand: requests arriving, admitted and unfinished, or queued in the engine.
    demand = (f"sum by (endpoint) (rate({REQUESTS}[5m])) > 0\n"
              f"or sum by (endpoint) ({IN_FLIGHT}) > 0\n"
              f"or sum by (endpoint) ({WAITING}) > 0")
    busy = f"sum by (endpoint, replica) ({RUNNING}) + sum by (endpoint, replica) ({WAITING}) > 0"
    return [
        {
            "alert": "AIFactoryEndpointBelowGuaranteedShare",
            "expr": (f"max by (endpoint) ({ACTUAL}) < max by (endpoint) ({GUARANTEED})\n"
                     f"and on (endpoint) (\n{demand}\n)"),
            "for": "10m",
            "labels": {"severity": "page"},
            "annotations": {
                "summary": "Endpoint {{ $labels.endpoint }} runs below its guaranteed replicas",
                "description": "Endpoint {{ $labels.endpoint }} has had {{ $value }} replicas, "
                               "fewer than it is guaranteed, for 10 minutes while it has "
                               "demand.",
            },
        },
        {
            "alert": "AIFactoryEngineStalled",
            # `unless ... > 0` rather than `== 0`: a replica whose token counter was never
            # exported (stuck from its first request) has no rate series to compare.
            "expr": (f"{busy}\nunless on (endpoint, replica)\n"
                     f"sum by (endpoint, replica) (rate({GENERATED}[2m])) > 0"),
            "for": "5m",
            "labels": {"severity": "page"},
            "annotations": {
                "summary": "Engine replica {{ $labels.replica }} of {{ $labels.endpoint }} "
                           "stopped generating",
                "description": "Replica {{ $labels.replica }} of endpoint "
                               "{{ $labels.endpoint }} has {{ $value }} requests running or "
                               "waiting but generated no token for 5 minutes.",
            },
        },
    ]


def ledger_alerts() -> list[dict[str, Any]]:
    """A usage record the store refused for good is a request nobody is billed for: any one
    needs a person (the record waits in the spool's dead-letter file to be put right)."""
    return [{
        "alert": "AIFactoryLedgerDeadLetters",
        "expr": f"sum by (tenant) (increase({DEAD_LETTERS}[1h])) > 0",
        "labels": {"severity": "ticket"},
        "annotations": {
            "summary": "Usage records of tenant {{ $labels.tenant }} were refused by the store",
            "description": "{{ $value }} usage records of tenant {{ $labels.tenant }} went to "
                           "the ledger spool's dead-letter file in the last hour instead of "
                           "the ledger.",
        },
    }]


def rule_groups() -> dict[str, Any]:
    """The rules file's content, as Prometheus reads it."""
    return {"groups": [
        {"name": "aifactory-tenant-sli", "rules": sli_rules()},
        {"name": "aifactory-tenant-slo-alerts", "rules": slo_alerts()},
        {"name": "aifactory-capacity-alerts", "rules": capacity_alerts()},
        {"name": "aifactory-ledger-alerts", "rules": ledger_alerts()},
    ]}


class _Dumper(yaml.SafeDumper):
    """Multi-line expressions as YAML block scalars, so the file reads like hand-written rules."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    header = ("# Generated by observability/rules/build.py; edit that file, then run\n"
              "# `python -m observability.rules.build` to regenerate.\n")
    return header + yaml.dump(rule_groups(), Dumper=_Dumper, sort_keys=False, width=100)


def main() -> int:
    RULES_FILE.write_text(render())
    print(f"wrote {RULES_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
