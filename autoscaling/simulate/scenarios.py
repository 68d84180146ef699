"""Simulated worlds: an endpoint population, its partition, and an arrival trace per scenario.

Population (deterministic for a seed):
- replica cost: 1 accelerator when there are at least as many accelerators as endpoints;
  otherwise the cycle 0.25, 0.5, 0.25, 0.5, 1 (mean 0.5), so that one replica of every
  endpoint still fits, which the baseline's static per-endpoint maximum needs.
- normal load: Zipf-like shares (weight 1 / rank^0.9, ranks shuffled) of a total mean demand
  of 45% of the partition, in replicas held at their target concurrency.
- guarantees: a random half of the endpoints is guaranteed 1.25x its normal demand in
  replicas, trimmed (largest first) until guarantees use at most 60% of the partition; those
  tenants get priority 1, the others 0.
- the long tail is sporadic: unguaranteed endpoints outside the busiest quarter get their
  traffic in sessions (on ~5 min, off ~20 min, exponential; same mean rate), so they go
  idle between sessions. Guaranteed tenants and the busiest quarter have steady traffic.
- the baseline's static max_replicas: one each, then the rest of the partition split by
  need (see _baseline_max).
Scenarios (arrival counts per step are Poisson around a rate):
- steady: constant rates.
- bursty: the rate of each endpoint is redrawn every 10 s from a gamma distribution with
  shape 0.25 and mean 1 (a gamma-mixed Poisson: bursts and lulls, same mean).
- diurnal: one sinusoidal cycle over the run, +-60%, tenants in three phase groups
  (a day compressed into the run, with time zones).
- noisy-neighbour: steady, except one unguaranteed tenant runs at 10x during 20-45% and
  60-80% of the run while guaranteed tenants keep their normal load. The noisy tenant is
  the busiest unguaranteed endpoint whose 10x burst fits into the capacity the others leave
  at normal load (their normal load rounded up to whole replicas): a burst that sharing
  could absorb, so the scenario tests whether it is absorbed without hurting guarantees.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from autoscaling.simulate.engine import EngineProfile
from autoscaling.spec import EndpointSpec, PartitionSpec
from observability.slo import SloTargets

SCENARIOS = ("steady", "bursty", "diurnal", "noisy-neighbour")

LOAD_FACTOR = 0.45
GUARANTEE_SHARE_MAX = 0.6
NOISY_BURST_FACTOR = 10.0
NOISY_BURSTS = ((0.20, 0.45), (0.60, 0.80))  # fractions of the run
NOISY_SPARE_SHARE = 0.5  # the burst asks for at most this share of what others leave
BUSY_SHARE = 0.25  # the busiest quarter of endpoints has continuous traffic
SPORADIC_ON_S, SPORADIC_OFF_S = 300.0, 1200.0  # sessions of the long tail
SPORADIC_DUTY = SPORADIC_ON_S / (SPORADIC_ON_S + SPORADIC_OFF_S)


@dataclass(frozen=True)
class World:
    """Everything both policies are run against: same endpoints, same trace."""

    scenario: str
    seed: int
    partition: PartitionSpec
    profile: EngineProfile
    dt: float
    prompt_tokens: np.ndarray  # per endpoint
    output_tokens: np.ndarray
    normal_replicas: np.ndarray  # mean demand in replicas at target concurrency
    initial_replicas: np.ndarray  # the fleet both policies start from
    baseline_max_replicas: np.ndarray  # static, sum(max * cost) <= capacity
    arrivals: np.ndarray  # [step, endpoint] request counts
    guaranteed: tuple[str, ...]  # names of endpoints with a guarantee
    noisy: tuple[str, ...]  # names of endpoints that burst

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.partition.endpoints]

    @property
    def costs(self) -> np.ndarray:
        return np.array([spec.replica_cost for spec in self.partition.endpoints])

    @property
    def steps(self) -> int:
        return self.arrivals.shape[0]


def _costs(endpoints: int, accelerators: float) -> np.ndarray:
    if accelerators >= endpoints:
        return np.ones(endpoints)
    cycle = np.array([0.25, 0.5, 0.25, 0.5, 1.0])
    costs = np.resize(cycle, endpoints)
    if costs.sum() > accelerators:
        costs = np.full(endpoints, 0.25)
    if costs.sum() > accelerators:
        raise ValueError(
            f"{endpoints} endpoints do not fit on {accelerators:g} accelerators even at a "
            "quarter accelerator per replica"
        )
    return costs


def _guarantees(
    normal: np.ndarray, costs: np.ndarray, accelerators: float, rng: np.random.Generator
) -> np.ndarray:
    count = len(normal)
    chosen = rng.permutation(count)[: max(1, count // 2)] if count > 1 else np.array([], int)
    guaranteed = np.zeros(count, dtype=np.int64)
    guaranteed[chosen] = np.ceil(1.25 * normal[chosen]).astype(np.int64)
    # Trim the largest guarantees until they fit in GUARANTEE_SHARE_MAX of the partition.
    budget = GUARANTEE_SHARE_MAX * accelerators
    while (guaranteed * costs).sum() > budget + 1e-9:
        guaranteed[int(np.argmax(guaranteed * costs))] -= 1
    return guaranteed


def _noisy_tenant(
    normal: np.ndarray, guaranteed: np.ndarray, costs: np.ndarray, accelerators: float
) -> int:
    """The unguaranteed endpoint with the largest load whose burst fits what others leave.

    "What others leave" is the capacity minus every other endpoint's normal load rounded up
    to whole replicas: the burst is one a work-conserving partition could absorb.
    """
    held = np.ceil(normal) * costs
    candidates = np.flatnonzero(guaranteed == 0)
    if len(candidates) == 0:
        candidates = np.arange(len(normal))
    burst = NOISY_BURST_FACTOR * normal[candidates] * costs[candidates]
    spare = accelerators - (held.sum() - held[candidates])
    fitting = candidates[burst <= NOISY_SPARE_SHARE * spare]
    if len(fitting) == 0:
        return int(candidates[np.argmin(burst)])
    return int(fitting[np.argmax(normal[fitting] * costs[fitting])])


def _baseline_max(
    normal: np.ndarray, guaranteed: np.ndarray, costs: np.ndarray, accelerators: float
) -> np.ndarray:
    """Static max replicas: one each (Ray's minimum), then the rest by need.

    Need is max(normal load, guarantee): the next replica goes to whoever is most short of
    it, while it fits. What an operator sharing a pool between independent deployments,
    knowing the normal loads and the promises, would configure.
    """
    maxima = np.ones(len(normal), dtype=np.int64)
    free = accelerators - float(costs.sum())
    if free < -1e-9:
        raise ValueError("one replica per endpoint does not fit the partition")
    need = np.maximum(normal, guaranteed)
    heap = [(-(need[i] / maxima[i]), i) for i in range(len(normal))]
    heapq.heapify(heap)
    while heap:
        _, i = heapq.heappop(heap)
        if costs[i] > free + 1e-9:
            continue
        maxima[i] += 1
        free -= costs[i]
        heapq.heappush(heap, (-(need[i] / maxima[i]), i))
    return maxima


def _on_off(steps: int, dt: float, rng: np.random.Generator) -> np.ndarray:
    """A 0/1 series: on for exponential spells of SPORADIC_ON_S, off for SPORADIC_OFF_S."""
    series = np.zeros(steps)
    t, on = 0.0, rng.random() < SPORADIC_DUTY
    end = steps * dt
    while t < end:
        spell = rng.exponential(SPORADIC_ON_S if on else SPORADIC_OFF_S)
        if on:
            series[int(t / dt): int(min(end, t + spell) / dt)] = 1.0
        t += spell
        on = not on
    return series


def _rates(
    scenario: str,
    base_rate: np.ndarray,
    noisy: np.ndarray,
    sporadic: np.ndarray,
    steps: int,
    dt: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Arrival rate per step and endpoint, requests per second."""
    count = len(base_rate)
    if scenario == "steady":
        rates = np.broadcast_to(base_rate, (steps, count))
    elif scenario == "bursty":
        slot = max(1, int(round(10.0 / dt)))
        slots = math.ceil(steps / slot)
        shape = 0.25
        multiplier = rng.gamma(shape, 1.0 / shape, size=(slots, count))
        rates = np.repeat(multiplier, slot, axis=0)[:steps] * base_rate
    elif scenario == "diurnal":
        phase = (np.arange(count) % 3) * (2 * math.pi / 3)
        angle = 2 * math.pi * np.arange(steps)[:, None] / steps + phase
        rates = base_rate * (1.0 + 0.6 * np.sin(angle))
    elif scenario == "noisy-neighbour":
        rates = np.array(np.broadcast_to(base_rate, (steps, count)))
        for start, end in NOISY_BURSTS:
            window = slice(int(start * steps), int(end * steps))
            rates[window, noisy] *= NOISY_BURST_FACTOR
    else:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    if sporadic.any():
        rates = np.array(rates)
        for endpoint in np.flatnonzero(sporadic):
            rates[:, endpoint] *= _on_off(steps, dt, rng) / SPORADIC_DUTY
    return rates


def build_world(
    scenario: str,
    *,
    seed: int,
    endpoints: int,
    accelerators: float,
    hours: float,
    profile: EngineProfile,
    dt: float = 1.0,
) -> World:
    """A population and trace for scenario; the same seed gives the same world."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    rng = np.random.default_rng(seed)
    costs = _costs(endpoints, accelerators)
    weights = 1.0 / np.arange(1, endpoints + 1) ** 0.9
    weights = weights[rng.permutation(endpoints)]
    demand_accelerators = LOAD_FACTOR * accelerators * weights / weights.sum()
    normal = demand_accelerators / costs
    prompt = rng.choice(profile.prompt_tokens, size=endpoints)
    output = rng.choice(profile.output_tokens, size=endpoints)
    per_replica = np.array(
        [profile.replica_requests_per_s(p, o) for p, o in zip(prompt, output)]
    )
    base_rate = normal * per_replica

    guaranteed = _guarantees(normal, costs, accelerators, rng)
    noisy = np.zeros(endpoints, dtype=bool)
    if scenario == "noisy-neighbour":
        noisy[_noisy_tenant(normal, guaranteed, costs, accelerators)] = True

    steps = int(round(hours * 3600 / dt))
    # The long tail is sporadic: unguaranteed, quiet endpoints come and go in sessions.
    quiet = normal * costs < np.quantile(normal * costs, 1.0 - BUSY_SHARE)
    sporadic = quiet & (guaranteed == 0) & ~noisy
    rates = _rates(scenario, base_rate, noisy, sporadic, steps, dt, rng)
    arrivals = rng.poisson(rates * dt).astype(np.int32)

    width = len(str(endpoints - 1))
    names = [f"ep-{i:0{width}d}" for i in range(endpoints)]
    slo = SloTargets(ttft_p95_s=profile.ttft_slo_s, itl_p95_s=profile.itl_slo_s)
    specs = tuple(
        EndpointSpec(
            name=names[i],
            replica_cost=float(costs[i]),
            min_replicas=1 if guaranteed[i] > 0 else 0,  # promised tenants stay warm
            max_replicas=max(1, int(accelerators // costs[i])),
            guaranteed_replicas=int(guaranteed[i]),
            priority=1 if guaranteed[i] > 0 else 0,
            slo=slo,
            target_ongoing_per_replica=profile.target_ongoing_per_replica,
            idle_to_zero_s=600.0,
        )
        for i in range(endpoints)
    )
    partition = PartitionSpec(name=f"sim-{scenario}", capacity=accelerators, endpoints=specs)
    baseline_max = _baseline_max(normal, guaranteed, costs, accelerators)
    initial = np.minimum(np.ceil(normal).astype(np.int64), baseline_max)
    return World(
        scenario=scenario,
        seed=seed,
        partition=partition,
        profile=profile,
        dt=dt,
        prompt_tokens=prompt,
        output_tokens=output,
        normal_replicas=normal,
        initial_replicas=initial,
        baseline_max_replicas=baseline_max,
        arrivals=arrivals,
        guaranteed=tuple(names[i] for i in range(endpoints) if guaranteed[i] > 0),
        noisy=tuple(names[i] for i in range(endpoints) if noisy[i]),
    )
