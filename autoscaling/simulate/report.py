"""One world's report: every controller's metrics, the best baseline, the oracle, the targets.

The targets are issue 20's (item 3), checked for the partition policy on every scenario:
goodput >= 1.3x the best baseline's on noisy-neighbour and contested, and >= 0.9x the
oracle's; guaranteed tenants >= 0.999 SLO attainment while their load fits their
guarantee; <= 1 flap per endpoint in any 10 minutes; no capacity violation. A goodput
target missed shows where the policy lost more than its reference, term by term
(metrics.loss_gap); the attainment target, what its worst tenant lost, by term.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autoscaling.simulate.metrics import loss_gap, policy_metrics
from autoscaling.simulate.oracle import PLAN_NOTE
from autoscaling.simulate.run import Trajectory
from autoscaling.simulate.scenarios import World

POLICY = "partition"
BASELINES = ("ray-fixed-max", "ray-shared", "static")
ORACLE = "oracle"
GOODPUT_VS_BASELINE_TARGET = 1.3
GOODPUT_VS_BASELINE_SCENARIOS = ("noisy-neighbour", "contested")
GOODPUT_VS_ORACLE_TARGET = 0.9
GUARANTEED_FIT_TARGET = 0.999
MAX_FLAPS_PER_WINDOW = 1


def _ratio(mine: float, theirs: float) -> float | None:
    return round(mine / theirs, 3) if theirs > 0 else None


def report(world: World, runs: dict[str, Trajectory], bound: dict,
           wall_s: float) -> dict[str, Any]:
    """The machine-readable result of one world: every controller and the targets."""
    policies = {name: policy_metrics(world, run) for name, run in runs.items()}
    hours = runs[POLICY].scored_seconds / 3600.0
    bound_goodput = round(bound["tokens"] / (world.partition.capacity * hours), 1)
    mine = policies[POLICY]
    best = max(BASELINES, key=lambda name: policies[name]["goodput_per_accel_hour"])
    oracle = policies[ORACLE]
    goodput = mine["goodput_per_accel_hour"]
    vs_best = _ratio(goodput, policies[best]["goodput_per_accel_hour"])
    vs_oracle = _ratio(goodput, oracle["goodput_per_accel_hour"])
    applies = world.scenario in GOODPUT_VS_BASELINE_SCENARIOS
    fit = mine["guaranteed_fit_slo_attainment_min"]
    flaps = mine["max_flaps_per_endpoint_10min"]
    targets: dict[str, dict[str, Any]] = {
        "goodput_vs_best_baseline": {
            "value": vs_best, "target": f">= {GOODPUT_VS_BASELINE_TARGET}",
            "reference": best,
            "met": (vs_best is None or vs_best >= GOODPUT_VS_BASELINE_TARGET) if applies
            else None},
        "goodput_vs_oracle": {
            "value": vs_oracle, "target": f">= {GOODPUT_VS_ORACLE_TARGET}",
            "vs_upper_bound": _ratio(goodput, bound_goodput),
            "met": vs_oracle is None or vs_oracle >= GOODPUT_VS_ORACLE_TARGET},
        "guaranteed_fit_slo_attainment_min": {
            "value": fit, "target": f">= {GUARANTEED_FIT_TARGET}",
            "tenant": mine["guaranteed_fit_worst_tenant"],
            "met": None if fit is None else fit >= GUARANTEED_FIT_TARGET},
        "max_flaps_per_endpoint_10min": {
            "value": flaps, "target": f"<= {MAX_FLAPS_PER_WINDOW}",
            "met": flaps <= MAX_FLAPS_PER_WINDOW},
        "capacity_violations": {
            "value": mine["capacity_violations"], "target": "== 0",
            "met": mine["capacity_violations"] == 0},
    }
    for name, reference, factor in (
            ("goodput_vs_best_baseline", policies[best], GOODPUT_VS_BASELINE_TARGET),
            ("goodput_vs_oracle", oracle, GOODPUT_VS_ORACLE_TARGET)):
        if targets[name]["met"] is False:
            targets[name]["short_per_accel_hour"] = round(
                factor * reference["goodput_per_accel_hour"] - goodput, 1)
            targets[name]["lost"] = loss_gap(mine, reference)
    if targets["guaranteed_fit_slo_attainment_min"]["met"] is False:
        targets["guaranteed_fit_slo_attainment_min"]["lost"] = mine[
            "guaranteed_fit_worst_tenant_lost"]
    return {
        "scenario": world.scenario,
        "seed": world.seed,
        "endpoints": len(world.names),
        "accelerators": world.partition.capacity,
        "hours": world.steps * world.dt / 3600.0,
        "engine": world.profile.name,
        "guaranteed_endpoints": len(world.guaranteed),
        "noisy_endpoints": list(world.noisy),
        "batch_endpoints": list(world.batch),
        "policies": policies,
        "best_baseline": best,
        "oracle": {"note": PLAN_NOTE,
                   "upper_bound": {"goodput_per_accel_hour": bound_goodput,
                                   "note": bound["note"]}},
        "targets": targets,
        "wall_s": round(wall_s, 2),
    }


def describe_loss(check: dict[str, Any]) -> str:
    """A missed target's lost terms in words, e.g. "lost more: capacity 340k; less: ..."."""
    lost = check["lost"]
    if "short_per_accel_hour" in check:
        more = [f"{term} {value / 1e3:,.0f}k" for term, value in lost.items() if value > 0]
        less = [f"{term} {-value / 1e3:,.0f}k" for term, value in lost.items() if value < 0]
        return (f"short by {check['short_per_accel_hour'] / 1e3:,.0f}k tokens/accelerator-"
                "hour; lost more: " + (", ".join(more) or "none")
                + ("; lost less: " + ", ".join(less) if less else ""))
    return f"{check['tenant']}'s requests lost while its load fit: " + ", ".join(
        f"{term} {share:.2%}" for term, share in lost.items() if share > 0)


def verdict(check: dict[str, Any]) -> str:
    return {True: "met", False: "MISSED", None: "n/a"}[check["met"]]


def render_text(result: dict[str, Any]) -> str:
    """A table for people: one column per controller, then the targets."""
    rows = [
        ("goodput, tokens per accelerator-hour", "goodput_per_accel_hour", "{:,.0f}"),
        ("goodput, tokens per held accelerator-hour", "goodput_per_held_accel_hour", "{:,.0f}"),
        ("  ... of it batch work", "batch_goodput_per_accel_hour", "{:,.0f}"),
        ("utilisation (held / capacity)", "utilisation", "{:.1%}"),
        ("SLO attainment, interactive requests", "slo_attainment_overall", "{:.2%}"),
        ("SLO attainment, worst guaranteed tenant", "guaranteed_slo_attainment_min", "{:.2%}"),
        ("  ... while its load fits its guarantee", "guaranteed_fit_slo_attainment_min",
         "{:.2%}"),
        ("SLO attainment, noisy tenant", "noisy_slo_attainment", "{:.2%}"),
        ("Jain's fairness over SLO attainment", "jain_fairness", "{:.3f}"),
        ("requests lost to cold starts", "cold_start_misses", "{:,.0f}"),
        ("scaling actions", "scaling_actions", "{}"),
        ("flaps per endpoint per 10 min", "flaps_per_endpoint_per_10min", "{:.3f}"),
        ("most flaps of one endpoint in 10 min", "max_flaps_per_endpoint_10min", "{}"),
        ("capacity violations", "capacity_violations", "{}"),
        ("wall time, s", "wall_s", "{:.1f}"),
    ]
    policies = result["policies"]
    names = list(policies)
    width = 14
    title = (f"scenario {result['scenario']}, seed {result['seed']}: {result['endpoints']} "
             f"endpoints ({result['guaranteed_endpoints']} guaranteed) on "
             f"{result['accelerators']:g} accelerators, {result['hours']:g} h, engine "
             f"{result['engine']}")
    lines = [title, f"{'':44}" + "".join(f"{name:>{width}}" for name in names)]
    for label, key, fmt in rows:
        cells = [policies[name].get(key) for name in names]
        lines.append(f"{label:44}" + "".join(
            f"{'-' if value is None else fmt.format(value):>{width}}" for value in cells))
    terms = list(policies[POLICY]["lost_per_accel_hour"])
    lines.append("lost, tokens per accelerator-hour:")
    for term in terms:
        lines.append(f"  {term:42}" + "".join(
            f"{policies[name]['lost_per_accel_hour'][term]:>{width},.0f}" for name in names))
    bound = result["oracle"]["upper_bound"]
    lines.append(f"oracle: {result['oracle']['note']}")
    lines.append(f"oracle's {bound['note']}: {bound['goodput_per_accel_hour']:,.0f}")
    reasons = policies[POLICY].get("reasons")
    if reasons:
        lines.append("partition scaling actions by reason: "
                     + ", ".join(f"{k} {v}" for k, v in reasons.items()))
    lines.append(f"targets (best baseline: {result['best_baseline']}):")
    for name, check in result["targets"].items():
        extra = (f"; {check['vs_upper_bound']} of the upper bound"
                 if "vs_upper_bound" in check else "")
        lines.append(f"  {name}: {check['value']} (target {check['target']}{extra}): "
                     f"{verdict(check)}")
        if "lost" in check:
            lines.append("    " + describe_loss(check))
    lines.append(f"total wall time {result['wall_s']:.1f} s")
    return "\n".join(lines)


def plot_allocation(world: World, runs: dict[str, Trajectory], path: str,
                    top: int = 8) -> None:
    """Stacked accelerators held per endpoint over time, one panel per policy (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = world.names
    busiest = list(np.argsort(-(world.normal_replicas * world.costs))[:top])
    noisy = [names.index(name) for name in world.noisy]
    shown = noisy + [i for i in busiest if i not in noisy][: max(0, top - len(noisy))]
    rest = [i for i in range(len(names)) if i not in shown]
    figure, axes = plt.subplots(len(runs), 1, figsize=(11, 3.6 * len(runs)), sharex=True,
                                sharey=True)
    for axis, (policy, run) in zip(np.atleast_1d(axes), runs.items()):
        minutes = run.tick_times / 60.0
        layers = [run.held[:, i] for i in shown]
        labels = [names[i] + (" (noisy)" if i in noisy else "")
                  + (" (guaranteed)" if names[i] in world.guaranteed else "") for i in shown]
        if rest:
            layers.append(run.held[:, rest].sum(axis=1))
            labels.append(f"{len(rest)} others")
        axis.stackplot(minutes, np.vstack(layers), labels=labels, step="post")
        axis.axhline(world.partition.capacity, color="black", linewidth=1, linestyle="--",
                     label="capacity")
        axis.set_title(f"{policy}: accelerators held per endpoint ({world.scenario})")
        axis.set_ylabel("accelerators")
    axis.set_xlabel("minutes")
    np.atleast_1d(axes)[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
