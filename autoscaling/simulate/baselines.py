"""The baselines: what users sharing a pool without the partition policy would run.

Ray's rule is a transcription of Ray Serve's replica_queue_length policy with its default
parameters, as in the installed ray 2.60 (ray/serve/autoscaling_policy.py, config.py):
desired = ongoing requests / target_ongoing_requests per running replica, averaged over
look_back_period_s = 30 s; upscaling and downscaling factors 1; the cold-start fast path
(0 running replicas and requests waiting -> 1 replica at once); bounds [min_replicas,
max_replicas]; and the delays: a scale-up only after upscale_delay_s = 30 s of consecutive
upward decisions, a scale-down after downscale_delay_s = 600 s, and 1 -> 0 only from one
replica, after downscale_to_zero_delay_s (None by default: downscale_delay_s). Ray 2.60 times
a streak from its first decision and clips to the bounds after the delay; counting this
simulator's control intervals and clipping first gives the same targets. Ray's own
target_ongoing_requests default is 2; every baseline uses the endpoint's
target_ongoing_per_replica instead, the per-replica load the partition policy aims for, so
they differ in their rules and not in what they know about the engine.

- ray-fixed-max: each endpoint scales alone with a static max_replicas chosen so that the
  sum of max_replicas * replica_cost fits the partition (scenarios.fill_by_need): how one
  shares a pool between independent deployments without overcommitting it.
- ray-shared: each endpoint may grow to what the partition holds (its spec's max_replicas),
  and replicas that do not fit wait, as Ray's scheduler leaves an actor pending until its
  resources are free: pending replicas are placed first come, first served, each as soon as
  it fits (one that does not fit does not block smaller ones behind it). A scale-down
  cancels the endpoint's youngest pending replicas before it stops placed ones, as Ray stops
  replicas not yet running first. A replica that fails is replaced through the same queue.
- static: a fixed allocation, one replica each and the rest by need, need being the trace's
  mean demand (or the guarantee, if larger); a batch endpoint's need is the capacity the
  others leave idle on average. What an operator sizing from last week's load would set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from autoscaling.simulate.observe import ObservedSignals
from autoscaling.simulate.scenarios import World, fill_by_need
from autoscaling.spec import CAPACITY_EPSILON


@dataclass(frozen=True)
class RayDefaultConfig:
    """Ray Serve AutoscalingConfig fields the default policy reads, at their defaults."""

    target_ongoing_requests: float
    min_replicas: int
    max_replicas: int
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    downscale_to_zero_delay_s: float | None = None
    upscaling_factor: float = 1.0
    downscaling_factor: float = 1.0


def ray_default_decision(
    config: RayDefaultConfig,
    total_ongoing: float,
    running_replicas: int,
    current_target: int,
    counter: int,
    control_interval_s: float,
) -> tuple[int, int]:
    """(new target, new decision counter) for one endpoint, as Ray Serve would decide it."""
    if running_replicas == 0:
        # Cold-start fast path: no delay when nothing runs and requests wait.
        if total_ongoing > 0:
            return max(math.ceil(1 * config.upscaling_factor), current_target), counter
        return current_target, counter

    desired = running_replicas * (
        total_ongoing / (config.target_ongoing_requests * running_replicas)
    )
    delta = desired - running_replicas
    factor = config.upscaling_factor if delta > 0 else config.downscaling_factor
    scaled = math.ceil(running_replicas + factor * delta)
    if math.ceil(desired) < running_replicas and scaled == running_replicas:
        scaled -= 1
    bounded = max(config.min_replicas, min(config.max_replicas, scaled))

    decision = current_target
    if bounded > current_target:
        counter = max(counter, 0) + 1
        if counter > int(config.upscale_delay_s / control_interval_s):
            counter, decision = 0, bounded
    elif bounded < current_target:
        counter = min(counter, 0) - 1
        if current_target == 1:
            delay = config.downscale_to_zero_delay_s
            delay = config.downscale_delay_s if delay is None else delay
        else:
            delay = config.downscale_delay_s
            bounded = max(1, bounded)
        if counter < -int(delay / control_interval_s):
            counter, decision = 0, bounded
    else:
        counter = 0
    return decision, counter


class RayDefaultBaseline:
    """One Ray default autoscaler per endpoint, side by side, sharing nothing."""

    name = "ray-fixed-max"

    def __init__(self, configs: list[RayDefaultConfig], initial: np.ndarray,
                 control_interval_s: float) -> None:
        self.configs = configs
        self.targets = initial.astype(np.int64).copy()
        self.counters = [0] * len(configs)
        self.control_interval_s = control_interval_s

    def decide(self, observed: ObservedSignals, now: float) -> np.ndarray:
        targets = self.targets.copy()
        for i, config in enumerate(self.configs):
            targets[i], self.counters[i] = ray_default_decision(
                config,
                float(observed.ongoing_look_back[i]),
                int(observed.ready[i]),
                int(self.targets[i]),
                self.counters[i],
                self.control_interval_s,
            )
        self.targets = targets
        return targets


class RaySharedBaseline(RayDefaultBaseline):
    """Ray's rule per endpoint up to the whole partition; replicas placed as they fit."""

    name = "ray-shared"

    def __init__(self, configs: list[RayDefaultConfig], initial: np.ndarray,
                 control_interval_s: float, costs: np.ndarray, capacity: float) -> None:
        super().__init__(configs, initial, control_interval_s)
        self.costs = costs
        self.capacity = capacity
        self.pending: list[int] = []  # one entry per replica asked for, oldest first

    def decide(self, observed: ObservedSignals, now: float) -> np.ndarray:
        wanted = super().decide(observed, now)  # Ray's target: placed + pending
        return self.place(wanted, observed.held.astype(np.int64))

    def place(self, wanted: np.ndarray, held: np.ndarray) -> np.ndarray:
        """Replicas placed per endpoint: held ones first, then pending ones in order."""
        placed = held.copy()
        queued = np.bincount(self.pending, minlength=len(placed)) if self.pending else (
            np.zeros(len(placed), dtype=np.int64))
        excess = placed + queued - wanted
        for i in np.flatnonzero(excess > 0):
            cancel = min(int(excess[i]), int(queued[i]))
            for _ in range(cancel):  # the youngest pending replicas go first
                last = len(self.pending) - 1 - self.pending[::-1].index(int(i))
                del self.pending[last]
            placed[i] -= int(excess[i]) - cancel
        for i in np.flatnonzero(excess < 0):
            self.pending.extend([int(i)] * int(-excess[i]))
        free = self.capacity - float(placed @ self.costs)
        waiting: list[int] = []
        for i in self.pending:
            if self.costs[i] <= free + CAPACITY_EPSILON:
                placed[i] += 1
                free -= self.costs[i]
            else:
                waiting.append(i)
        self.pending = waiting
        return placed


class StaticAllocation:
    """The same replicas every decision (failed ones are restarted)."""

    name = "static"

    def __init__(self, allocation: np.ndarray) -> None:
        self.allocation = allocation.astype(np.int64)

    def decide(self, observed: ObservedSignals, now: float) -> np.ndarray:
        return self.allocation.copy()


def _ray_configs(world: World, maxima: np.ndarray) -> list[RayDefaultConfig]:
    return [
        RayDefaultConfig(
            target_ongoing_requests=spec.target_ongoing_per_replica,
            min_replicas=spec.min_replicas,
            max_replicas=int(maximum),
        )
        for spec, maximum in zip(world.partition.endpoints, maxima)
    ]


def ray_fixed_max(world: World, control_interval_s: float) -> RayDefaultBaseline:
    return RayDefaultBaseline(_ray_configs(world, world.baseline_max_replicas),
                              world.initial_replicas, control_interval_s)


def ray_shared(world: World, control_interval_s: float) -> RaySharedBaseline:
    maxima = np.array([spec.max_replicas for spec in world.partition.endpoints])
    return RaySharedBaseline(_ray_configs(world, maxima), world.initial_replicas,
                             control_interval_s, world.costs, world.partition.capacity)


def static_allocation(world: World) -> StaticAllocation:
    """One each, then by need: the trace's mean demand in replicas at target concurrency."""
    seconds = world.steps * world.dt
    need = world.arrivals.sum(axis=0) / seconds / world.per_replica_rps
    batch = world.is_batch
    costs = world.costs
    if batch.any():
        idle = world.partition.capacity - float(np.ceil(need[~batch]) @ costs[~batch])
        need[batch] = max(idle, 0.0) / costs[batch] / batch.sum()
    guaranteed = np.array([spec.guaranteed_replicas for spec in world.partition.endpoints])
    return StaticAllocation(fill_by_need(need, guaranteed, costs, world.partition.capacity))
