"""The simulation loop: one world, one controller, control ticks over fluid engine steps."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from autoscaling.policy import decide
from autoscaling.signals import EndpointSignals
from autoscaling.simulate.baseline import RayDefaultBaseline, RayDefaultConfig
from autoscaling.simulate.engine import FluidEngines
from autoscaling.simulate.observe import ObservedSignals, SignalRecorder
from autoscaling.simulate.scenarios import World
from autoscaling.spec import CAPACITY_EPSILON, PartitionSpec
from autoscaling.state import EndpointState, PolicyState

CONTROL_INTERVAL_S = 10.0
# Both policies start from the same fleet, which fits neither perfectly: requests of the
# first WARM_UP_S (at most a tenth of the run) are not scored.
WARM_UP_S = 300.0


class Controller(Protocol):
    name: str

    def decide(self, observed: ObservedSignals, now: float) -> np.ndarray: ...


class PartitionController:
    """Feeds the partition policy the simulator's signals, as the live controller would."""

    name = "partition"

    def __init__(self, partition: PartitionSpec, initial: np.ndarray) -> None:
        self.partition = partition
        self.names = [spec.name for spec in partition.endpoints]
        self.state = PolicyState(
            endpoints={name: EndpointState(target=int(n)) for name, n in zip(self.names, initial)}
        )
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
                ttft_p95_s=None if ttft != ttft else ttft,  # NaN: nothing observed
                itl_p95_s=None if itl != itl else itl,
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


def baseline_controller(world: World) -> RayDefaultBaseline:
    configs = [
        RayDefaultConfig(
            target_ongoing_requests=spec.target_ongoing_per_replica,
            min_replicas=spec.min_replicas,
            max_replicas=int(maximum),
        )
        for spec, maximum in zip(world.partition.endpoints, world.baseline_max_replicas)
    ]
    return RayDefaultBaseline(configs, world.initial_replicas, CONTROL_INTERVAL_S)


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


def run(world: World, controller: Controller) -> Trajectory:
    """Drive world's trace through the engines under controller's decisions."""
    started = time.perf_counter()
    dt = world.dt
    costs = world.costs
    capacity = world.partition.capacity
    cumulative = np.zeros((world.steps + 1, len(costs)), dtype=np.int64)
    np.cumsum(world.arrivals, axis=0, out=cumulative[1:])
    ttft_slo = np.array([spec.slo.ttft_p95_s for spec in world.partition.endpoints])
    itl_slo = np.array([spec.slo.itl_p95_s for spec in world.partition.endpoints])
    engines = FluidEngines(world.profile, world.prompt_tokens, world.output_tokens, ttft_slo,
                           itl_slo, cumulative, world.initial_replicas, dt)
    recorder = SignalRecorder(len(costs), dt, CONTROL_INTERVAL_S)
    control_steps = recorder.control_steps
    warm_up = int(min(WARM_UP_S, 0.1 * world.steps * dt) / dt)

    good = np.zeros(len(costs))
    held_seconds = 0.0
    violations = 0
    tick_times: list[float] = []
    targets_log: list[np.ndarray] = []
    held_log: list[np.ndarray] = []
    for step in range(world.steps):
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
        if step >= warm_up:
            good += outcome.good
            held_seconds += float(engines.held @ costs) * dt

    # Requests cut off by a scale-down count as failed, even if they started well.
    arrivals = (cumulative[-1] - cumulative[warm_up]).astype(float)
    good = np.minimum(np.maximum(good - engines.preempted, 0.0), arrivals)
    count = len(costs)
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
    )


def run_both(world: World) -> dict[str, Trajectory]:
    """The partition policy and the baseline on the same world, partition first."""
    partition = PartitionController(world.partition, world.initial_replicas)
    return {
        "partition": run(world, partition),
        "baseline": run(world, baseline_controller(world)),
    }

