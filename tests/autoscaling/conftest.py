"""Builders shared by the autoscaling tests, as fixtures: small specs and signals."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from autoscaling import EndpointSignals, EndpointSpec, PartitionSpec, PolicyTuning, SloTargets

SLO = SloTargets(ttft_p95_s=1.0, itl_p95_s=0.05)


def _endpoint(name: str = "a", **overrides: object) -> EndpointSpec:
    fields: dict[str, object] = dict(
        name=name, replica_cost=1.0, max_replicas=8, guaranteed_replicas=0, priority=0,
        slo=SLO, target_ongoing_per_replica=10.0, idle_to_zero_s=600.0,
    )
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
