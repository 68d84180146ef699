"""The simulation loop: one world, one controller, control ticks over fluid engine steps.

Every request not served within SLO is lost to one term of the goodput sum, by the state of
its endpoint when it was lost (it gave up in the queue, got its first token late, or got
its tokens too slowly, or was refused by the gateway for a standing queue):
- cold_start: no replica was ready, or replicas were starting, or the requests had been
  held for the endpoint's wake;
- capacity: replicas were up and none starting, and the partition had no room for one more;
- slo: replicas were up, none starting, and there was room: the size was the controller's;
- scale_down / failure: it was running on a replica that was stopped / crashed;
- other: still queued at the end of the run (or admitted across the warm-up's edge).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from autoscaling.policy import decide
from autoscaling.signals import EndpointSignals
from autoscaling.simulate.baselines import ray_fixed_max, ray_shared, static_allocation
from autoscaling.simulate.engine import FluidEngines, StepOutcome
from autoscaling.simulate.observe import ObservedSignals, SignalRecorder
from autoscaling.simulate.oracle import LENT_SIGMAS, OracleController, plan, upper_bound
from autoscaling.simulate.scenarios import World
from autoscaling.spec import CAPACITY_EPSILON, PartitionSpec
from autoscaling.state import EndpointState, PolicyState

CONTROL_INTERVAL_S = 10.0
# Every controller starts from the same fleet, which fits none perfectly: requests of the
# first WARM_UP_S (at most a tenth of the run) are not scored.
WARM_UP_S = 300.0
MINUTE_S = 60.0  # good requests are also kept per minute, for attainment while load fits
LOSS_TERMS = ("cold_start", "capacity", "slo", "scale_down", "failure", "other")


class Controller(Protocol):
    name: str

    def decide(self, observed: ObservedSignals, now: float) -> np.ndarray: ...


class PartitionController:
    """Feeds the partition policy the simulator's signals, as the live controller would: a
    batch endpoint's queue and running requests are its batch backlog (the store's count,
    live), so they are lent what the interactive endpoints leave; its first replicas are
    lent ones."""

    name = "partition"

    def __init__(self, partition: PartitionSpec, initial: np.ndarray,
                 batch: tuple[str, ...] = ()) -> None:
        self.partition = partition
        self.names = [spec.name for spec in partition.endpoints]
        self.batch = frozenset(batch)
        self.state = PolicyState(endpoints={
            name: EndpointState(target=int(n),
                                batch_lent=int(n) if name in self.batch and n else None)
            for name, n in zip(self.names, initial)})
        self.reasons: Counter[str] = Counter()

    def decide(self, observed: ObservedSignals, now: float) -> np.ndarray:
        columns = zip(
            self.names,
            observed.ready.tolist(),
            observed.arrival_rate.tolist(),
            observed.waiting.tolist(),
            observed.running.tolist(),
            observed.kv_cache_usage.tolist(),
            observed.ttft_p95.tolist(),
            observed.itl_p95.tolist(),
        )
        signals = {
            name: EndpointSignals(
                ready_replicas=ready,
                arrival_rate_rps=rate,
                waiting=waiting,
                running=running,
                kv_cache_usage=kv,
                ttft_p95_s=None if math.isnan(ttft) else ttft,  # NaN: nothing observed
                itl_p95_s=None if math.isnan(itl) else itl,
                **(self._batch_lines(waiting, running) if name in self.batch else {}),
            )
            for name, ready, rate, waiting, running, kv, ttft, itl in columns
        }
        result = decide(self.partition, signals, self.state, now)
        self.state = result.state
        for decision in result.decisions.values():
            if decision.changed:
                self.reasons[decision.reason.value] += 1
        return np.fromiter((d.target for d in result.decisions.values()), dtype=np.int64,
                           count=len(self.names))


    @staticmethod
    def _batch_lines(waiting: float, running: float) -> dict[str, int]:
        # Every request of a batch endpoint is a batch line, all of them sent to its engines
        # (the simulator has no store to queue them in): none is left as interactive load.
        lines = math.ceil(waiting + running)
        return {"batch_backlog": lines, "batch_running": lines}


@dataclass
class Trajectory:
    """What one run of one controller produced, for the report."""

    policy: str
    arrivals: np.ndarray  # requests per endpoint, after the warm-up
    good: np.ndarray  # of those, requests meeting both SLO targets, per endpoint
    tick_times: np.ndarray  # seconds
    targets: np.ndarray  # [tick, endpoint] decided replicas
    held: np.ndarray  # [tick, endpoint] accelerators held (ready + starting) after the tick
    held_accelerator_seconds: float  # after the warm-up
    scored_seconds: float  # the run less its warm-up
    capacity_violations: int
    wall_s: float
    reasons: dict[str, int] = field(default_factory=dict)
    lost: dict[str, np.ndarray] = field(default_factory=dict)  # requests per term, endpoint
    # "good" and each loss term per [minute, endpoint] (0 before the warm-up): a request in
    # the minute it got its first token or was cut off; one lost in the queue, in the minute
    # it arrived.
    by_minute: dict[str, np.ndarray] = field(default_factory=dict)
    # Requests the gateway refused for a standing queue, per endpoint, after the warm-up
    # (they are in the loss terms too, by their endpoint's state).
    refused: np.ndarray = field(default_factory=lambda: np.zeros(0))


def warm_up_steps(world: World) -> int:
    return int(min(WARM_UP_S, 0.1 * world.steps * world.dt) / world.dt)


def scored_demand(world: World) -> np.ndarray:
    """Requests scored per endpoint: those arriving after the warm-up; for batch work,
    its whole queue (it arrives at the start and may wait)."""
    arrivals = world.arrivals[warm_up_steps(world):].sum(axis=0).astype(float)
    batch = world.is_batch
    arrivals[batch] = world.arrivals[:, batch].sum(axis=0)
    return arrivals


# Called after every step with (step, the engines, what the step did): to record more than
# the trajectory keeps, e.g. every request's TTFT (autoscaling.simulate.live_check).
StepHook = Callable[[int, FluidEngines, StepOutcome], None]


def run(world: World, controller: Controller, *,
        control_interval_s: float = CONTROL_INTERVAL_S, window_s: float | None = None,
        on_step: StepHook | None = None) -> Trajectory:
    """Drive world's trace through the engines under controller's decisions, one decision
    every control_interval_s over signals windowed as SignalRecorder's window_s says."""
    started = time.perf_counter()
    dt = world.dt
    costs = world.costs
    capacity = world.partition.capacity
    count = len(costs)
    cumulative = np.zeros((world.steps + 1, count), dtype=np.int64)
    np.cumsum(world.arrivals, axis=0, out=cumulative[1:])
    ttft_slo = np.array([spec.slo.ttft_p95_s for spec in world.partition.endpoints])
    itl_slo = np.array([spec.slo.itl_p95_s for spec in world.partition.endpoints])
    engines = FluidEngines(world.profile, world.prompt_tokens, world.output_tokens, ttft_slo,
                           itl_slo, cumulative, world.initial_replicas, dt, world.timeout_s,
                           world.turns if world.gateway_refuses else None)
    recorder = SignalRecorder(count, dt, control_interval_s, window_s)
    control_steps = recorder.control_steps
    warm_up = warm_up_steps(world)
    minute_steps = max(1, round(MINUTE_S / dt))
    failures: dict[int, list[tuple[int, int]]] = {}
    for at, endpoint, replicas in world.failures:
        failures.setdefault(at, []).append((endpoint, replicas))

    good = np.zeros(count)
    refused = np.zeros(count)
    by_minute = {key: np.zeros((-(-world.steps // minute_steps), count))
                 for key in ("good", *LOSS_TERMS)}
    columns = np.arange(count)
    lost = {term: np.zeros(count) for term in ("cold_start", "capacity", "slo")}
    cut_off = {"scale_down": np.zeros(count), "failure": np.zeros(count)}  # so far
    held_seconds = 0.0
    violations = 0
    tick_times: list[float] = []
    targets_log: list[np.ndarray] = []
    held_log: list[np.ndarray] = []
    for step in range(world.steps):
        for endpoint, replicas in failures.get(step, ()):
            engines.fail(endpoint, replicas)
        # The first tick waits for a full interval of signals: an empty window reads as idle.
        if step > 0 and step % control_steps == 0:
            now = step * dt
            targets = controller.decide(recorder.observe(engines, step), now)
            engines.scale_to(targets, step)
            held = engines.held * costs
            if (float(targets @ costs) > capacity + CAPACITY_EPSILON
                    or float(held.sum()) > capacity + CAPACITY_EPSILON):
                violations += 1
            tick_times.append(now)
            targets_log.append(targets.astype(np.int32))
            held_log.append(held.astype(np.float32))
        outcome = engines.step(step)
        recorder.record(engines, outcome)
        if on_step is not None:
            on_step(step, engines, outcome)
        if step >= warm_up:
            good += outcome.good
            refused += outcome.refused
            held_seconds += float(engines.held @ costs) * dt
            minute = step // minute_steps
            by_minute["good"][minute] += outcome.good
            # A request given up on arrived a client timeout ago; one late, at the queue's
            # head: count them in the minute they arrived.
            gave_up = max(0, step + 1 - engines.timeout_steps) // minute_steps
            losses = ((outcome.timed_out, gave_up),
                      (outcome.late, outcome.oldest_step // minute_steps),
                      (outcome.slow, minute), (outcome.refused, minute))
            if any(requests.any() for requests, _ in losses):
                terms = _terms(engines, costs, capacity)
                for requests, at in losses:
                    for term, where in terms.items():
                        missed = np.where(where, requests, 0.0)
                        lost[term] += missed
                        by_minute[term][at, columns] += missed
            for term, total in (("scale_down", engines.preempted), ("failure", engines.failed)):
                if step > warm_up and np.any(total > cut_off[term]):
                    by_minute["good"][minute] -= total - cut_off[term]
                    by_minute[term][minute] += total - cut_off[term]
                cut_off[term] = total.copy()

    # Requests cut off by a scale-down or a failure count as lost, even if they started well.
    arrivals = scored_demand(world)
    good = np.minimum(np.maximum(good - engines.preempted - engines.failed, 0.0), arrivals)
    lost["scale_down"] = engines.preempted.copy()
    lost["failure"] = engines.failed.copy()
    lost["other"] = np.maximum(arrivals - good - sum(lost.values()), 0.0)
    return Trajectory(
        policy=controller.name,
        arrivals=arrivals,
        good=good,
        tick_times=np.array(tick_times),
        targets=np.array(targets_log).reshape(-1, count),
        held=np.array(held_log).reshape(-1, count),
        held_accelerator_seconds=held_seconds,
        scored_seconds=(world.steps - warm_up) * dt,
        capacity_violations=violations,
        wall_s=time.perf_counter() - started,
        reasons=dict(getattr(controller, "reasons", {})),
        lost={term: lost[term] for term in LOSS_TERMS},
        by_minute=by_minute,
        refused=refused,
    )


def _terms(engines: FluidEngines, costs: np.ndarray, capacity: float) -> dict[str, np.ndarray]:
    """Which term each endpoint's requests lost now fall into (see above)."""
    cold = (engines.ready == 0) | (engines.starting > 0) | engines.serving_held
    full = capacity - float(engines.held @ costs) + CAPACITY_EPSILON < costs
    return {"cold_start": cold, "capacity": ~cold & full, "slo": ~cold & ~full}


def controllers(world: World) -> list[Controller]:
    """The partition policy and the three baselines, in report order."""
    return [
        PartitionController(world.partition, world.initial_replicas, world.batch),
        ray_fixed_max(world, CONTROL_INTERVAL_S),
        ray_shared(world, CONTROL_INTERVAL_S),
        static_allocation(world),
    ]


def oracle_plans(world: World) -> list[OracleController]:
    return [OracleController(plan(world, CONTROL_INTERVAL_S, sigmas), CONTROL_INTERVAL_S)
            for sigmas in LENT_SIGMAS]


def run_all(world: World) -> tuple[dict[str, Trajectory], dict]:
    """Every controller on the same world, the better of the oracle's plans, and its bound."""
    runs = {controller.name: run(world, controller) for controller in controllers(world)}
    plans = [run(world, oracle) for oracle in oracle_plans(world)]
    runs["oracle"] = max(plans, key=lambda trajectory: float(
        trajectory.good @ world.output_tokens))
    bound = upper_bound(world, CONTROL_INTERVAL_S, warm_up_steps(world), scored_demand(world))
    return runs, bound
