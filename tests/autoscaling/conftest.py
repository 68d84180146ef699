"""Builders shared by the autoscaling tests, as fixtures: small specs and signals."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from autoscaling import EndpointSignals, EndpointSpec, PartitionSpec, PolicyTuning, SloTargets

SLO = SloTargets(ttft_p95_s=1.0, itl_p95_s=0.05)


def _endpoint(name: str = "a", **overrides: object) -> EndpointSpec:
    fields: dict[str, object] = {
        "name": name, "replica_cost": 1.0, "max_replicas": 8, "guaranteed_replicas": 0,
        "priority": 0, "slo": SLO, "target_ongoing_per_replica": 10.0, "idle_to_zero_s": 600.0,
    }
    fields.update(overrides)
    return EndpointSpec(**fields)


def _partition(*endpoints: EndpointSpec, capacity: float = 8.0,
               **tuning: object) -> PartitionSpec:
    return PartitionSpec(capacity=capacity, endpoints=endpoints, tuning=PolicyTuning(**tuning))


def _signals(running: float = 0.0, waiting: float = 0.0, *, ready: int | None = None,
             rate: float | None = None, **extra: object) -> EndpointSignals:
    """Observed signals; the arrival rate defaults to 1 rps when there is load, else 0."""
    if rate is None:
        rate = 1.0 if running + waiting > 0 else 0.0
    return EndpointSignals(ready_replicas=ready, arrival_rate_rps=rate, running=running,
                           waiting=waiting, **extra)


@pytest.fixture
def endpoint() -> Callable[..., EndpointSpec]:
    return _endpoint


@pytest.fixture
def partition() -> Callable[..., PartitionSpec]:
    return _partition


@pytest.fixture
def signals() -> Callable[..., EndpointSignals]:
    return _signals


def _tiny_world(arrivals: object, *, capacity: float, guaranteed: tuple[int, ...] | None = None,
                prompt: tuple[int, ...] | None = None, output: tuple[int, ...] | None = None,
                initial: tuple[int, ...] | None = None) -> object:
    """A hand-made simulator world: arrivals [step, endpoint] per 1 s step, costs of 1,
    h100-llama-8b engines; a guaranteed tenant keeps one replica warm and has priority 1."""
    import numpy as np

    from autoscaling.simulate.engine import PROFILES
    from autoscaling.simulate.scenarios import World, fill_by_need

    profile = PROFILES["h100-llama-8b"]
    table = np.asarray(arrivals, dtype=np.int32)
    count = table.shape[1]
    owed = np.array(guaranteed or (0,) * count)
    prompts = np.array(prompt or (512,) * count)
    outputs = np.array(output or (256,) * count)
    slo = SloTargets(ttft_p95_s=profile.ttft_slo_s, itl_p95_s=profile.itl_slo_s)
    specs = tuple(
        EndpointSpec(name=f"ep-{i}", replica_cost=1.0, min_replicas=1 if owed[i] else 0,
                     max_replicas=int(capacity), guaranteed_replicas=int(owed[i]),
                     priority=1 if owed[i] else 0, slo=slo,
                     target_ongoing_per_replica=profile.target_ongoing_per_replica)
        for i in range(count))
    rates = np.array([profile.replica_requests_per_s(p, o) for p, o in zip(prompts, outputs)])
    normal = table.mean(axis=0) / rates
    return World(
        scenario="tiny", seed=0,
        partition=PartitionSpec(name="tiny", capacity=capacity, endpoints=specs),
        profile=profile, dt=1.0, prompt_tokens=prompts, output_tokens=outputs,
        normal_replicas=normal,
        initial_replicas=np.array(initial if initial is not None else (1,) * count),
        baseline_max_replicas=fill_by_need(normal, owed, np.ones(count), capacity),
        arrivals=table, guaranteed=tuple(s.name for s in specs if s.guaranteed_replicas),
        noisy=())


@pytest.fixture
def tiny_world() -> Callable[..., object]:
    return _tiny_world
