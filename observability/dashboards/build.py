"""The Grafana dashboards, written with grafana-foundation-sdk and committed as JSON.

Three dashboards: operator overview (the partition and the autoscaler), tenant SLA (each
tenant's latency against its own targets, its error budget, rejections, tokens and batch
jobs) and engine health (queues, KV cache, throughput). Panels read the recording rules of
`observability/rules` where one exists. Regenerate with `python -m observability.dashboards.build`;
a test fails when the JSON drifts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    StackingMode,
    TimeZoneUtc,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

from observability.metrics import exposed_name as m
from observability.rules import build as rules

DASHBOARDS_DIR = Path(__file__).parent
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# The SLO period the error budget is spent over; the burn-rate factors assume 30 days.
SLO_PERIOD = "30d"

Query = tuple[str, str]  # (expr, legend)


def _targets(panel: Any, queries: list[Query]) -> Any:
    for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(Dataquery().ref_id(ref).expr(expr).legend_format(legend)
                                  .datasource(DATASOURCE))
    return panel


def series(title: str, unit: str, queries: list[Query], *, description: str = "",
           stacked: bool = False, width: int = 12) -> Timeseries:
    panel = (Timeseries().title(title).description(description).unit(unit).span(width)
             .height(8).datasource(DATASOURCE).min(0)
             .legend(VizLegendOptions().show_legend(True).display_mode(LegendDisplayMode.LIST)
                     .placement(LegendPlacement.BOTTOM))
             .tooltip(VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)))
    if stacked:
        panel = panel.stacking(StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(30)
    return _targets(panel, queries)


def single(title: str, unit: str, queries: list[Query], *, description: str = "",
           width: int = 6) -> Stat:
    panel = (Stat().title(title).description(description).unit(unit).span(width).height(5)
             .datasource(DATASOURCE)
             .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    return _targets(panel, queries)


def _datasource() -> DatasourceVariable:
    return DatasourceVariable("datasource").label("Data source").type("prometheus")


def _label_variable(name: str, metric: str) -> QueryVariable:
    # allValue ".+": "All" matches every value without listing them into the regex.
    return (QueryVariable(name).label(name.capitalize()).datasource(DATASOURCE)
            .query(f"label_values({metric}, {name})").multi(True).include_all(True)
            .all_value(".+").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(1))


def _dashboard(uid: str, title: str, description: str) -> Dashboard:
    return (Dashboard(title).uid(uid).description(description).tags(["aifactory"])
            .refresh("30s").time("now-6h", "now").timezone(TimeZoneUtc).editable()
            .with_variable(_datasource()))


# Operator overview


def operator_overview() -> Dashboard:
    capacity = f"max by (accelerator) ({m('aifactory_partition_capacity_accelerators')})"
    allocated = f"max by (endpoint) ({m('aifactory_endpoint_allocated_accelerators')})"
    return (
        _dashboard("aifactory-operator", "AI Factory / Operator overview",
                   "The partition: what each endpoint holds, replicas wanted against running, "
                   "and what the autoscaler did.")
        .with_row(Row("Partition"))
        .with_panel(single("Partition capacity", "none", [(capacity, "{{accelerator}}")],
                           description="Accelerators in the partition (CPU slots on a CPU "
                                       "partition)."))
        .with_panel(single("Utilisation", "percentunit", [
            (f"sum({allocated}) / sum({capacity})", "allocated")],
            description="Share of the partition allocated to endpoints."))
        .with_panel(series("Allocation by endpoint", "none", [(allocated, "{{endpoint}}")],
                           stacked=True, width=12,
                           description="Accelerators the autoscaler allocates to each "
                                       "endpoint, stacked up to the partition's capacity."))
        .with_row(Row("Replicas and autoscaler"))
        .with_panel(series("Replicas: target, actual, guaranteed", "none", [
            (f"max by (endpoint) ({m('aifactory_endpoint_replicas_target')})",
             "{{endpoint}} target"),
            (f"max by (endpoint) ({m('aifactory_endpoint_replicas_actual')})",
             "{{endpoint}} actual"),
            (f"max by (endpoint) ({m('aifactory_endpoint_guaranteed_replicas')})",
             "{{endpoint}} guaranteed"),
        ]))
        .with_panel(series("Autoscaler actions by reason (per hour)", "none", [
            ((f"sum by (endpoint, reason) "
             f"(increase({m('aifactory_autoscaler_decisions')}[1h]))"),
             "{{endpoint}} {{reason}}")]))
        .with_row(Row("Traffic"))
        .with_panel(series("Requests by endpoint and outcome", "reqps", [
            (f"sum by (endpoint, outcome) (rate({m('aifactory_requests')}[5m]))",
             "{{endpoint}} {{outcome}}")], stacked=True))
        .with_panel(series("Requests in flight", "none", [
            (f"sum by (endpoint) ({m('aifactory_requests_in_flight')})", "{{endpoint}}")]))
    )


# Tenant SLA


def _budget_left(bad_ratio: str) -> str:
    """1 - (share of bad requests over the SLO period / the budget): 1 is untouched, 0 is
    spent, below 0 overspent."""
    return f"1 - ({bad_ratio}) / on (tenant) {rules.ERROR_BUDGET}{{tenant=~\"$tenant\"}}"


def _period_ratio(bad: str, total: str) -> str:
    """Bad over total per tenant over the SLO period. A tenant with traffic but no bad series
    gets a real 0 (the `or`), one without traffic no sample: as the rules' ratios."""
    total_increase = f"sum by (tenant) (increase({total}[{SLO_PERIOD}]))"
    return (f"(sum by (tenant) (increase({bad}[{SLO_PERIOD}])) or 0 * {total_increase})\n"
            f"/ ({total_increase} > 0)")


def tenant_sla() -> Dashboard:
    sel = '{tenant=~"$tenant"}'
    slo, req = m("aifactory_slo_requests"), m("aifactory_requests")
    missed_period = _period_ratio(f'{slo}{{tenant=~"$tenant",slo="missed"}}', f"{slo}{sel}")
    failed_period = _period_ratio(f'{req}{{tenant=~"$tenant",outcome="error"}}',
                                  f'{req}{{tenant=~"$tenant",{rules.ANSWERED}}}')
    target = m("aifactory_tenant_slo_target_seconds")
    return (
        _dashboard("aifactory-tenant-sla", "AI Factory / Tenant SLA",
                   "Is each tenant getting what it was promised: latency against its own "
                   "targets, error budget, rejections and tokens.")
        .with_variable(_label_variable("tenant", req))
        .with_row(Row("Latency against each tenant's targets"))
        .with_panel(series("Time to first token p95 vs target", "s", [
            (f"{rules.TTFT_P95}{sel}", "{{tenant}} p95"),
            (f'max by (tenant) ({target}{{tenant=~"$tenant",sli="ttft"}})', "{{tenant}} target"),
        ], description="Streamed requests; p95 over 5 minutes against the tenant's target."))
        .with_panel(series("Inter-token latency p95 vs target", "s", [
            (f"{rules.ITL_P95}{sel}", "{{tenant}} p95"),
            (f'max by (tenant) ({target}{{tenant=~"$tenant",sli="itl"}})', "{{tenant}} target"),
        ]))
        .with_row(Row("Error budget"))
        .with_panel(single(f"Latency error budget left ({SLO_PERIOD})", "percentunit", [
            (_budget_left(missed_period), "{{tenant}}")], width=12,
            description="Share of the budget (1 - objective) not yet spent on requests that "
                        "missed a latency target."))
        .with_panel(single(f"Availability error budget left ({SLO_PERIOD})", "percentunit", [
            (_budget_left(failed_period), "{{tenant}}")], width=12,
            description="Share of the budget not yet spent on failed requests (rejections "
                        "and cancellations do not count)."))
        .with_panel(series("Requests missing their targets", "percentunit", [
            (f"{rules.slo_missed_ratio('5m')}{sel}", "{{tenant}} 5m"),
            (f"{rules.slo_missed_ratio('1h')}{sel}", "{{tenant}} 1h"),
            (f"{rules.ERROR_BUDGET}{sel}", "{{tenant}} budget"),
        ]))
        .with_panel(series("Failed requests", "percentunit", [
            (f"{rules.error_ratio('5m')}{sel}", "{{tenant}} 5m"),
            (f"{rules.error_ratio('1h')}{sel}", "{{tenant}} 1h"),
        ]))
        .with_row(Row("Traffic, rejections and tokens"))
        .with_panel(series("Requests by outcome", "reqps", [
            (f"sum by (tenant, outcome) (rate({req}{sel}[5m]))", "{{tenant}} {{outcome}}")],
            stacked=True))
        .with_panel(series("Rate-limit rejections", "reqps", [
            (f"sum by (tenant, code) (rate({m('aifactory_rate_limited')}{sel}[5m]))",
             "{{tenant}} {{code}}")]))
        .with_panel(series("Tokens per second", "none", [
            (f"sum by (tenant) (rate({m('aifactory_prompt_tokens')}{sel}[5m]))",
             "{{tenant}} prompt"),
            (f"sum by (tenant) (rate({m('aifactory_completion_tokens')}{sel}[5m]))",
             "{{tenant}} completion"),
        ], width=24))
        .with_row(Row("Batch jobs (no latency target: apart from the figures above)"))
        .with_panel(series("Batch lines pending", "none", [
            (f'max by (tenant, state) ({m("aifactory_batch_lines_pending")}{sel})',
             "{{tenant}} {{state}}")], stacked=True,
            description="Lines of unfinished batches, queued or running, as the store holds "
                        "them (every gateway replica reports it: max, not sum)."))
        .with_panel(series("Batch lines ended", "reqps", [
            (f"sum by (tenant, outcome) (rate({m('aifactory_batch_lines')}{sel}[5m]))",
             "{{tenant}} {{outcome}}")], stacked=True))
        .with_panel(series("Batch tokens per second", "none", [
            (f"sum by (tenant) (rate({m('aifactory_batch_completion_tokens')}{sel}[5m]))",
             "{{tenant}} completion"),
            (f"sum by (tenant) (rate({m('aifactory_batch_prompt_tokens')}{sel}[5m]))",
             "{{tenant}} prompt"),
        ], width=24))
    )


# Engine health


def engine_health() -> Dashboard:
    sel = '{endpoint=~"$endpoint"}'
    hits, queries = m("aifactory_engine_prefix_cache_hits"), m("aifactory_engine_prefix_cache_queries")
    return (
        _dashboard("aifactory-engine", "AI Factory / Engine health",
                   "vLLM engines per endpoint and replica: queues, KV cache, throughput.")
        .with_variable(_label_variable("endpoint", m("aifactory_engine_requests_running")))
        .with_row(Row("Queue"))
        .with_panel(series("Requests running and waiting", "none", [
            (f"sum by (endpoint, replica) ({m('aifactory_engine_requests_running')}{sel})",
             "{{endpoint}}/{{replica}} running"),
            (f"sum by (endpoint, replica) ({m('aifactory_engine_requests_waiting')}{sel})",
             "{{endpoint}}/{{replica}} waiting"),
        ]))
        .with_panel(series("Queue time p95", "s", [
            ((f"histogram_quantile(0.95, sum by (endpoint, le) "
             f"(rate({m('aifactory_queue_time_seconds')}_bucket{sel}[5m])))"), "{{endpoint}}")]))
        .with_row(Row("KV cache"))
        .with_panel(series("KV-cache usage", "percentunit", [
            (f"max by (endpoint, replica) ({m('aifactory_engine_kv_cache_usage_ratio')}{sel})",
             "{{endpoint}}/{{replica}}")]))
        .with_panel(series("Prefix-cache hit ratio", "percentunit", [
            ((f"sum by (endpoint) (rate({hits}{sel}[5m]))\n"
             f"/ (sum by (endpoint) (rate({queries}{sel}[5m])) > 0)"), "{{endpoint}}")]))
        .with_row(Row("Throughput"))
        .with_panel(series("Generated tokens per second", "none", [
            ((f"sum by (endpoint, replica) "
             f"(rate({m('aifactory_engine_generation_tokens')}{sel}[5m]))"),
             "{{endpoint}}/{{replica}}")], width=24))
        .with_row(Row("Starts"))
        .with_panel(series("Engine start by phase (p95)", "s", [
            ((f"histogram_quantile(0.95, sum by (endpoint, phase, le) "
             f"(rate({m('aifactory_engine_start_phase_seconds')}_bucket{sel}[1d])))"),
             "{{endpoint}} {{phase}}")], width=24))
    )


DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "operator-overview": operator_overview,
    "tenant-sla": tenant_sla,
    "engine-health": engine_health,
}


def _numbered(model: dict[str, Any]) -> dict[str, Any]:
    """Panel ids 1, 2, ... in order: Grafana links and keeps panels by id."""
    for number, panel in enumerate(model["panels"], start=1):
        panel["id"] = number
    return model


def model(name: str) -> dict[str, Any]:
    """A dashboard as the JSON object Grafana imports."""
    encoded = JSONEncoder(sort_keys=True).encode(DASHBOARDS[name]().build())
    return _numbered(json.loads(encoded))


def render(name: str) -> str:
    return json.dumps(model(name), indent=2, sort_keys=True) + "\n"


def path(name: str) -> Path:
    return DASHBOARDS_DIR / f"{name}.json"


def main() -> int:
    for name in DASHBOARDS:
        path(name).write_text(render(name))
        print(f"wrote {path(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
