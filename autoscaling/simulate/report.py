"""Turning runs into numbers: SLO attainment, goodput, fairness, flaps; as text, JSON, plot."""

from __future__ import annotations

from typing import Any

import numpy as np

from autoscaling.simulate.run import Trajectory
from autoscaling.simulate.scenarios import World

FLAP_WINDOW_S = 600.0  # a reversal of direction sooner than this after the last action flaps

# The targets, checked on every scenario (they were set for noisy-neighbour).
GUARANTEED_SLO_TARGET = 0.99
GOODPUT_RATIO_TARGET = 1.3
MAX_FLAPS_PER_WINDOW = 1


def jain_fairness(shares: np.ndarray) -> float:
    """Jain's index (sum x)^2 / (n sum x^2): 1 when all equal, 1/n when one takes all."""
    if len(shares) == 0 or not np.any(shares):
        return 1.0
    return float(shares.sum() ** 2 / (len(shares) * np.square(shares).sum()))


def flap_counts(tick_times: np.ndarray, targets: np.ndarray,
                initial: np.ndarray) -> tuple[int, int]:
    """(total flaps, most flaps of one endpoint within any FLAP_WINDOW_S).

    A flap is a scaling action in the opposite direction of the same endpoint's previous
    action, less than FLAP_WINDOW_S after it.
    """
    if len(tick_times) == 0:
        return 0, 0
    history = np.vstack([initial[None, :], targets])
    steps = np.sign(np.diff(history, axis=0))
    total, worst = 0, 0
    for endpoint in np.flatnonzero(np.any(steps != 0, axis=0)):
        moves = np.flatnonzero(steps[:, endpoint])
        times = tick_times[moves]
        signs = steps[moves, endpoint]
        flaps = times[1:][(signs[1:] != signs[:-1]) & (np.diff(times) < FLAP_WINDOW_S)]
        total += len(flaps)
        if len(flaps):
            # For each flap, how many flaps fall in the window that it opens.
            within = np.searchsorted(flaps, flaps + FLAP_WINDOW_S, side="left") - np.arange(
                len(flaps))
            worst = max(worst, int(within.max()))
    return total, worst


def policy_metrics(world: World, run: Trajectory) -> dict[str, Any]:
    names = world.names
    hours = run.scored_seconds / 3600.0
    capacity = world.partition.capacity
    demand = run.arrivals
    attainment = np.where(demand > 0, run.good / np.maximum(demand, 1e-12), 1.0)
    good_tokens = float((run.good * world.output_tokens).sum())
    held_hours = run.held_accelerator_seconds / 3600.0
    index = {name: i for i, name in enumerate(names)}
    guaranteed = [attainment[index[name]] for name in world.guaranteed]
    # Guaranteed tenants whose normal load fits within their guarantee: the ones promised.
    covered = [attainment[index[spec.name]] for spec in world.partition.endpoints
               if 0 < world.normal_replicas[index[spec.name]] <= spec.guaranteed_replicas]
    noisy = [attainment[index[name]] for name in world.noisy]
    history = np.vstack([world.initial_replicas[None, :], run.targets])
    flaps, worst_flaps = flap_counts(run.tick_times, run.targets, world.initial_replicas)
    served = demand > 0
    return {
        "slo_attainment": {name: round(float(a), 4) for name, a in zip(names, attainment)},
        "slo_attainment_overall": round(float(run.good.sum() / max(demand.sum(), 1e-12)), 4),
        "guaranteed_slo_attainment_min": round(float(min(guaranteed)), 4) if guaranteed else None,
        "covered_guaranteed_slo_attainment_min": (
            round(float(min(covered)), 4) if covered else None),
        "noisy_slo_attainment": round(float(min(noisy)), 4) if noisy else None,
        "goodput_per_accel_hour": round(good_tokens / (capacity * hours), 1),
        "goodput_per_held_accel_hour": round(good_tokens / held_hours, 1) if held_hours else 0.0,
        "utilisation": round(run.held_accelerator_seconds / (capacity * run.scored_seconds), 4),
        "jain_fairness": round(jain_fairness(attainment[served]), 4),
        "scaling_actions": int(np.count_nonzero(np.diff(history, axis=0))),
        "flaps": flaps,
        "max_flaps_per_endpoint_10min": worst_flaps,
        "capacity_violations": run.capacity_violations,
        "wall_s": round(run.wall_s, 2),
        **({"reasons": dict(sorted(run.reasons.items()))} if run.reasons else {}),
    }


def report(world: World, runs: dict[str, Trajectory], wall_s: float) -> dict[str, Any]:
    """The machine-readable result: scenario, seed and both policies' metrics."""
    policies = {name: policy_metrics(world, run) for name, run in runs.items()}
    mine, theirs = policies["partition"], policies["baseline"]
    ratio = (mine["goodput_per_accel_hour"] / theirs["goodput_per_accel_hour"]
             if theirs["goodput_per_accel_hour"] else float("inf"))
    # What the ratio would be if every request met its SLO: the scenario's ceiling.
    run = runs["partition"]
    every_token = float((run.arrivals * world.output_tokens).sum())
    ceiling_goodput = every_token / (world.partition.capacity * run.scored_seconds / 3600.0)
    ceiling = (ceiling_goodput / theirs["goodput_per_accel_hour"]
               if theirs["goodput_per_accel_hour"] else float("inf"))
    guaranteed = mine["guaranteed_slo_attainment_min"]
    targets = {
        "guaranteed_slo_attainment_min": {
            "value": guaranteed, "target": f">= {GUARANTEED_SLO_TARGET}",
            "met": guaranteed is None or guaranteed >= GUARANTEED_SLO_TARGET},
        "goodput_ratio_vs_baseline": {
            "value": round(ratio, 3), "target": f">= {GOODPUT_RATIO_TARGET}",
            "met": ratio >= GOODPUT_RATIO_TARGET,
            "ceiling": round(ceiling, 3)},
        "capacity_violations": {
            "value": mine["capacity_violations"], "target": "== 0",
            "met": mine["capacity_violations"] == 0},
        "max_flaps_per_endpoint_10min": {
            "value": mine["max_flaps_per_endpoint_10min"], "target": f"<= {MAX_FLAPS_PER_WINDOW}",
            "met": mine["max_flaps_per_endpoint_10min"] <= MAX_FLAPS_PER_WINDOW},
    }
    return {
        "scenario": world.scenario,
        "seed": world.seed,
        "endpoints": len(world.names),
        "accelerators": world.partition.capacity,
        "hours": world.steps * world.dt / 3600.0,
        "engine": world.profile.name,
        "guaranteed_endpoints": len(world.guaranteed),
        "noisy_endpoints": list(world.noisy),
        "policies": policies,
        "targets": targets,
        "wall_s": round(wall_s, 2),
    }


def render_text(result: dict[str, Any]) -> str:
    """A short table for people."""
    rows = [
        ("SLO attainment, all requests", "slo_attainment_overall", "{:.2%}"),
        ("SLO attainment, worst guaranteed tenant", "guaranteed_slo_attainment_min", "{:.2%}"),
        ("  ... of those whose load fits the guarantee", "covered_guaranteed_slo_attainment_min",
         "{:.2%}"),
        ("SLO attainment, noisy tenant", "noisy_slo_attainment", "{:.2%}"),
        ("goodput, tokens per accelerator-hour", "goodput_per_accel_hour", "{:,.0f}"),
        ("goodput, tokens per held accelerator-hour", "goodput_per_held_accel_hour", "{:,.0f}"),
        ("utilisation (held / capacity)", "utilisation", "{:.1%}"),
        ("Jain's fairness over SLO attainment", "jain_fairness", "{:.3f}"),
        ("scaling actions", "scaling_actions", "{}"),
        ("flaps (reversal < 10 min)", "flaps", "{}"),
        ("most flaps of one endpoint in 10 min", "max_flaps_per_endpoint_10min", "{}"),
        ("capacity violations", "capacity_violations", "{}"),
        ("wall time, s", "wall_s", "{:.1f}"),
    ]
    policies = result["policies"]
    lines = [
        f"scenario {result['scenario']}, seed {result['seed']}: {result['endpoints']} endpoints "
        f"({result['guaranteed_endpoints']} guaranteed) on {result['accelerators']:g} "
        f"accelerators, {result['hours']:g} h, engine {result['engine']}",
        f"{'':44}{'partition':>14}{'baseline':>14}",
    ]
    for label, key, fmt in rows:
        cells = []
        for name in ("partition", "baseline"):
            value = policies[name].get(key)
            cells.append("-" if value is None else fmt.format(value))
        lines.append(f"{label:44}{cells[0]:>14}{cells[1]:>14}")
    reasons = policies["partition"].get("reasons")
    if reasons:
        lines.append("partition scaling actions by reason: "
                     + ", ".join(f"{k} {v}" for k, v in reasons.items()))
    lines.append("targets:")
    for name, check in result["targets"].items():
        verdict = "met" if check["met"] else "MISSED"
        ceiling = (f"; {check['ceiling']} if every request met its SLO"
                   if "ceiling" in check else "")
        lines.append(f"  {name}: {check['value']} (target {check['target']}{ceiling}): "
                     f"{verdict}")
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
