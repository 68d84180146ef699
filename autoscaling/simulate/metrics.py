"""What one run of one controller scores: goodput, its lost terms, attainment, fairness, flaps.

Goodput is output tokens of requests that met both latency targets (batch work has none:
every token it produced counts). Interactive endpoints' lost tokens are split into the
terms of run.py (cold_start, capacity, slo, scale_down, failure, other), and a batch
endpoint's backlog left at the end is batch_unserved, so that for every controller on one
world goodput + the lost terms = the offered tokens (but for the few requests that straddle
the warm-up's edge): the gap between two controllers is the sum of the differences of their
terms.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autoscaling.simulate.run import LOSS_TERMS, MINUTE_S, Trajectory, warm_up_steps
from autoscaling.simulate.scenarios import World

FLAP_WINDOW_S = 600.0  # a reversal of direction sooner than this after the last action flaps


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


def attainment_where_fits(world: World, run: Trajectory) -> dict[str, dict[str, float]]:
    """Each guaranteed tenant's SLO attainment over the minutes its load fit its guarantee,
    and the shares of those minutes' requests lost to each term.

    A minute fits when its arrivals are at most guaranteed_replicas x what one replica
    carries at its target concurrency, the unit guarantees are sized in. E.g. a guarantee
    of 2 replicas of 11.7 requests/s fits a minute of up to 1,404 arrivals. Good requests
    are counted in the minute they got their first token, which is within the TTFT target
    of their arrival. Tenants with no such minute are left out.
    """
    minute_steps = max(1, round(MINUTE_S / world.dt))
    first = -(-warm_up_steps(world) // minute_steps)
    full = world.steps // minute_steps
    if not run.by_minute or full <= first:
        return {}
    arrivals = world.arrivals[: full * minute_steps].reshape(full, minute_steps, -1).sum(axis=1)
    rates = world.per_replica_rps
    result = {}
    for i, spec in enumerate(world.partition.endpoints):
        if spec.guaranteed_replicas == 0:
            continue
        limit = spec.guaranteed_replicas * rates[i] * MINUTE_S
        fits = np.flatnonzero(arrivals[first:, i] <= limit) + first
        offered = float(arrivals[fits, i].sum())
        if offered > 0:
            shares = {key: float(table[fits, i].sum()) / offered
                      for key, table in run.by_minute.items()}
            shares["good"] = min(1.0, shares["good"])
            result[spec.name] = shares
    return result


def policy_metrics(world: World, run: Trajectory) -> dict[str, Any]:
    names = world.names
    hours = run.scored_seconds / 3600.0
    capacity = world.partition.capacity
    per_accel_hour = 1.0 / (capacity * hours)
    batch = world.is_batch
    interactive = ~batch
    demand = run.arrivals
    attainment = np.where(demand > 0, run.good / np.maximum(demand, 1e-12), 1.0)
    tokens = run.good * world.output_tokens
    good_tokens = float(tokens.sum())
    held_hours = run.held_accelerator_seconds / 3600.0
    index = {name: i for i, name in enumerate(names)}
    guaranteed = [attainment[index[name]] for name in world.guaranteed]
    # Guaranteed tenants whose normal load fits within their guarantee: the ones promised.
    covered = [attainment[index[spec.name]] for spec in world.partition.endpoints
               if 0 < world.normal_replicas[index[spec.name]] <= spec.guaranteed_replicas]
    fit = attainment_where_fits(world, run)
    worst_fit = min(fit, key=lambda name: fit[name]["good"]) if fit else None
    noisy = [attainment[index[name]] for name in world.noisy]
    history = np.vstack([world.initial_replicas[None, :], run.targets])
    flaps, worst_flaps = flap_counts(run.tick_times, run.targets, world.initial_replicas)
    served = (demand > 0) & interactive
    lost = {term: float(run.lost[term][interactive] @ world.output_tokens[interactive])
            for term in LOSS_TERMS}
    if batch.any():
        lost["batch_unserved"] = float((demand - run.good)[batch] @ world.output_tokens[batch])
    windows = max(run.scored_seconds / FLAP_WINDOW_S, 1e-9)
    overall = run.good[interactive].sum() / max(demand[interactive].sum(), 1e-12)
    return {
        "slo_attainment": {name: round(float(a), 4) for name, a in zip(names, attainment)},
        "slo_attainment_overall": round(float(overall), 4),
        "guaranteed_slo_attainment_min": round(float(min(guaranteed)), 4) if guaranteed else None,
        "covered_guaranteed_slo_attainment_min": (
            round(float(min(covered)), 4) if covered else None),
        "guaranteed_fit_slo_attainment_min": (
            round(fit[worst_fit]["good"], 4) if worst_fit is not None else None),
        "guaranteed_fit_worst_tenant": worst_fit,
        "guaranteed_fit_worst_tenant_lost": (
            {term: round(fit[worst_fit][term], 4) for term in LOSS_TERMS}
            if worst_fit is not None else None),
        "noisy_slo_attainment": round(float(min(noisy)), 4) if noisy else None,
        "goodput_per_accel_hour": round(good_tokens * per_accel_hour, 1),
        "goodput_per_held_accel_hour": round(good_tokens / held_hours, 1) if held_hours else 0.0,
        "batch_goodput_per_accel_hour": (
            round(float(tokens[batch].sum()) * per_accel_hour, 1) if batch.any() else None),
        "lost_per_accel_hour": {term: round(value * per_accel_hour, 1)
                                for term, value in lost.items()},
        "cold_start_misses": round(float(run.lost["cold_start"][interactive].sum()), 1),
        "utilisation": round(run.held_accelerator_seconds / (capacity * run.scored_seconds), 4),
        "jain_fairness": round(jain_fairness(attainment[served]), 4),
        "scaling_actions": int(np.count_nonzero(np.diff(history, axis=0))),
        "flaps": flaps,
        "flaps_per_endpoint_per_10min": round(flaps / len(names) / windows, 4),
        "max_flaps_per_endpoint_10min": worst_flaps,
        "capacity_violations": run.capacity_violations,
        "wall_s": round(run.wall_s, 2),
        **({"reasons": dict(sorted(run.reasons.items()))} if run.reasons else {}),
    }


def loss_gap(mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float]:
    """Where mine lost more goodput than theirs, per term, tokens per accelerator-hour,
    largest first; the terms sum to their goodput minus mine."""
    gap = {term: round(value - theirs["lost_per_accel_hour"].get(term, 0.0), 1)
           for term, value in mine["lost_per_accel_hour"].items()}
    return dict(sorted(gap.items(), key=lambda item: -item[1]))
