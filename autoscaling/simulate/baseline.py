"""The baseline: independent per-endpoint autoscalers following Ray Serve's default rule.

A transcription of Ray Serve's replica_queue_length policy with its default parameters
(python/ray/serve/autoscaling_policy.py): desired = ongoing requests / target_ongoing_requests
per running replica, averaged over look_back_period_s = 30 s; upscaling and downscaling
factors 1; the cold-start fast path (0 running replicas and requests waiting -> 1 replica at
once); bounds [min_replicas, max_replicas]; and the delay counter: a scale-up only after
upscale_delay_s = 30 s of consecutive upward decisions, a scale-down after downscale_delay_s
= 600 s, and 1 -> 0 only from one replica, after downscale_to_zero_delay_s (defaulting to
downscale_delay_s). Ray counts its 0.1 s control-loop periods; the simulator counts its own
control interval, the same delays in seconds to within one interval.

Each endpoint scales alone: max_replicas is static and chosen so that the sum of
max_replicas * replica_cost fits the partition, which is how one shares a pool between
independent Ray Serve deployments without overcommitting it. target_ongoing_requests is
the endpoint's target_ongoing_per_replica, the same per-replica load the partition policy
aims for, so the two differ in their rules and not in what they know about the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from autoscaling.simulate.observe import ObservedSignals


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

    name = "baseline"

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
