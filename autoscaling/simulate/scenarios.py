"""Simulated worlds: an endpoint population, its partition, and an arrival trace per scenario.

Population (deterministic for a seed):
- replica cost: 1 accelerator when there are at least as many accelerators as endpoints;
  otherwise the cycle 0.25, 0.5, 0.25, 0.5, 1 (mean 0.5), so that one replica of every
  endpoint still fits, which the fixed-maximum baseline needs.
- normal load: Zipf-like shares (weight 1 / rank^0.9, ranks shuffled) of a total mean demand
  of 45% of the partition, in replicas held at their target concurrency.
- guarantees: a random half of the endpoints is guaranteed 1.25x its normal demand in
  replicas, trimmed (largest first) until guarantees use at most 60% of the partition; those
  tenants get priority 1, the others 0.
- the long tail is sporadic (traces.on_off): unguaranteed endpoints outside the busiest
  quarter come and go in sessions. Guaranteed tenants and the busiest quarter are steady.
- the fixed-maximum baseline's max_replicas: one each, then the rest of the partition split
  by need (see fill_by_need).
Scenarios (arrival counts per step are Poisson around a rate, see traces.py):
- steady, bursty, diurnal: the trace shapes of the same names.
- noisy-neighbour: steady, except one unguaranteed tenant runs at 10x during 20-45% and
  60-80% of the run while guaranteed tenants keep their normal load. The noisy tenant is
  the busiest unguaranteed endpoint whose 10x burst fits into the capacity the others leave
  at normal load (their normal load rounded up to whole replicas): a burst that sharing
  could absorb, so the scenario tests whether it is absorbed without hurting guarantees.
- contested: steady, except every guaranteed tenant bursts at once, during 25-45% and
  65-80% of the run, by the factor that takes the partition's total demand to 1.3x its
  capacity: guarantees are claimed together and the spare capacity cannot cover everyone.
- diurnal-sporadic: diurnal, and every unguaranteed endpoint is sporadic: most endpoints
  are idle most of the time, so holding them warm or at zero is what matters.
- batch-backlog: diurnal interactive load plus one batch endpoint (lowest priority, -1,
  no guarantee, no client timeout, no latency target) whose queue holds, from the start,
  more work than the whole partition could do in the run: it should fill idle capacity
  and yield it first.
- replica-failure: the noisy-neighbour world, and in the middle of the first burst one
  ready replica each of the noisy tenant and of the busiest guaranteed tenant crashes.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from autoscaling.simulate import traces
from autoscaling.simulate.engine import CLIENT_TIMEOUT_S, EngineProfile
from autoscaling.spec import EndpointSpec, PartitionSpec
from observability.slo import SloTargets

SCENARIOS = ("steady", "bursty", "diurnal", "noisy-neighbour", "contested", "diurnal-sporadic",
             "batch-backlog", "replica-failure")
# Each scenario's trace shape (traces.py).
SHAPE = {"steady": "steady", "bursty": "bursty", "diurnal": "diurnal",
         "noisy-neighbour": "burst", "contested": "burst", "diurnal-sporadic": "diurnal",
         "batch-backlog": "diurnal", "replica-failure": "burst"}

LOAD_FACTOR = 0.45
GUARANTEE_SHARE_MAX = 0.6
NOISY_BURST_FACTOR = 10.0
NOISY_BURSTS = ((0.20, 0.45), (0.60, 0.80))  # fractions of the run
NOISY_SPARE_SHARE = 0.5  # the burst asks for at most this share of what others leave
CONTESTED_BURSTS = ((0.25, 0.45), (0.65, 0.80))
CONTESTED_DEMAND = 1.3  # the partition's total demand during a contested burst / capacity
BUSY_SHARE = 0.25  # the busiest quarter of endpoints has continuous traffic
FAILURE_AT = 0.325  # of the run: the middle of the first noisy burst
BATCH_PRIORITY = -1
# Batch work has no latency target; these bounds only keep its SLO a valid SloTargets.
BATCH_SLO = SloTargets(ttft_p95_s=86_400.0, itl_p95_s=60.0)


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
    initial_replicas: np.ndarray  # the fleet every controller starts from
    baseline_max_replicas: np.ndarray  # the fixed-maximum baseline's, sum(max * cost) <= capacity
    arrivals: np.ndarray  # [step, endpoint] request counts
    guaranteed: tuple[str, ...]  # names of endpoints with a guarantee
    noisy: tuple[str, ...]  # names of endpoints that burst
    batch: tuple[str, ...] = ()  # names of batch endpoints: no timeout, no latency target
    failures: tuple[tuple[int, int, int], ...] = ()  # (step, endpoint index, replicas) crashing
    client_timeout_s: float = CLIENT_TIMEOUT_S  # interactive clients give up after this
    # The gateway's turns per endpoint (gateway.py): None, the platform's default
    # max_ongoing_requests (the profile's max_num_seqs) x max_replicas.
    gateway_slots: np.ndarray | None = None
    # Whether the gateway refuses newcomers to a standing queue (gateway.py); False: every
    # request queues until served or given up, as the simulator did before it modelled this.
    gateway_refuses: bool = True

    @property
    def is_batch(self) -> np.ndarray:
        batch = set(self.batch)
        return np.array([name in batch for name in self.names], dtype=bool)

    @property
    def timeout_s(self) -> np.ndarray:
        """Client timeout per endpoint: batch work waits for ever."""
        return np.where(self.is_batch, np.inf, self.client_timeout_s)

    @property
    def turns(self) -> np.ndarray:
        """Requests the gateway sends to an endpoint's engines at once; the rest wait in
        its line, and are refused while that line stands (gateway.py)."""
        if self.gateway_slots is not None:
            return self.gateway_slots
        return np.array([self.profile.max_num_seqs * spec.max_replicas
                         for spec in self.partition.endpoints], dtype=float)

    @property
    def per_replica_rps(self) -> np.ndarray:
        """Requests per second one replica carries at its target concurrency."""
        return np.array([self.profile.replica_requests_per_s(p, o)
                         for p, o in zip(self.prompt_tokens, self.output_tokens)])

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


def fill_by_need(
    normal: np.ndarray, guaranteed: np.ndarray, costs: np.ndarray, accelerators: float
) -> np.ndarray:
    """Replicas per endpoint filling the partition: one each (Ray's minimum), then by need.

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
    if scenario in ("noisy-neighbour", "replica-failure"):
        noisy[_noisy_tenant(normal, guaranteed, costs, accelerators)] = True

    steps = round(hours * 3600 / dt)
    # The long tail is sporadic: unguaranteed, quiet endpoints come and go in sessions.
    quiet = normal * costs < np.quantile(normal * costs, 1.0 - BUSY_SHARE)
    if scenario == "diurnal-sporadic":
        quiet[:] = True
    sporadic = quiet & (guaranteed == 0) & ~noisy
    bursts: dict = {}
    if noisy.any():
        bursts = {"bursting": noisy, "burst_factor": NOISY_BURST_FACTOR,
                  "burst_windows": NOISY_BURSTS}
    elif scenario == "contested":
        bursts = {"bursting": guaranteed > 0, "burst_windows": CONTESTED_BURSTS,
                  "burst_factor": _contested_factor(normal, guaranteed, costs, accelerators)}
    rates = traces.rates(SHAPE[scenario], base_rate, sporadic, steps, dt, rng, **bursts)
    arrivals = rng.poisson(rates * dt).astype(np.int32)

    width = len(str(endpoints - 1))
    names = [f"ep-{i:0{width}d}" for i in range(endpoints)]
    slo = SloTargets(ttft_p95_s=profile.ttft_slo_s, itl_p95_s=profile.itl_slo_s)
    specs = [
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
    ]
    batch: tuple[str, ...] = ()
    if scenario == "batch-backlog":
        # Idle capacity at normal load is the batch's normal share; its backlog at the start
        # is more than the whole partition could serve in the run.
        prompt = np.append(prompt, profile.prompt_tokens[len(profile.prompt_tokens) // 2])
        output = np.append(output, profile.output_tokens[len(profile.output_tokens) // 2])
        rate = profile.replica_requests_per_s(prompt[-1], output[-1])
        backlog = np.zeros((steps, 1), dtype=np.int32)
        backlog[0, 0] = int(2 * accelerators * rate * steps * dt)
        arrivals = np.hstack([arrivals, backlog])
        normal = np.append(normal, accelerators - float(np.ceil(normal) @ costs))
        guaranteed = np.append(guaranteed, 0)
        costs = np.append(costs, 1.0)
        batch = ("batch",)
        specs.append(EndpointSpec(
            name="batch", replica_cost=1.0, min_replicas=0,
            max_replicas=max(1, int(accelerators)), priority=BATCH_PRIORITY, slo=BATCH_SLO,
            target_ongoing_per_replica=profile.target_ongoing_per_replica, idle_to_zero_s=600.0,
        ))
        names.append("batch")
    failures: tuple[tuple[int, int, int], ...] = ()
    if scenario == "replica-failure":
        busiest = int(np.argmax(np.where(guaranteed > 0, normal * costs, -1.0)))
        at = int(FAILURE_AT * steps)
        failures = ((at, int(np.flatnonzero(noisy)[0]), 1), (at, busiest, 1))
    partition = PartitionSpec(name=f"sim-{scenario}", capacity=accelerators,
                              endpoints=tuple(specs))
    baseline_max = fill_by_need(normal, guaranteed, costs, accelerators)
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
        guaranteed=tuple(names[i] for i in range(len(names)) if guaranteed[i] > 0),
        noisy=tuple(names[i] for i in range(endpoints) if noisy[i]),
        batch=batch,
        failures=failures,
    )


def _contested_factor(normal: np.ndarray, guaranteed: np.ndarray, costs: np.ndarray,
                      accelerators: float) -> float:
    """The burst factor of guaranteed tenants that takes total demand to CONTESTED_DEMAND x
    capacity, e.g. 24 accelerators, 5 guaranteed and 5.8 not: (31.2 - 5.8) / 5 = 5.1x."""
    load = normal * costs
    promised = float(load[guaranteed > 0].sum())
    others = float(load[guaranteed == 0].sum())
    return max(1.0, (CONTESTED_DEMAND * accelerators - others) / max(promised, 1e-9))
