"""Config validation: what a partition and its endpoints refuse, with messages that name them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from autoscaling import EndpointSpec, PartitionSpec, SloTargets

SLO = SloTargets(ttft_p95_s=1.0, itl_p95_s=0.05)


def spec(name: str, cost: float, guaranteed: int, **extra: object) -> EndpointSpec:
    return EndpointSpec(name=name, replica_cost=cost, max_replicas=8,
                        guaranteed_replicas=guaranteed, slo=SLO, **extra)


@pytest.mark.parametrize(
    "capacity, guarantees, fits",
    [
        (4.0, [("a", 1.0, 2), ("b", 1.0, 2)], True),  # 2*1 + 2*1 = 4 <= 4
        (4.0, [("a", 1.0, 3), ("b", 1.0, 2)], False),  # 3*1 + 2*1 = 5 > 4
        (2.0, [("a", 0.5, 2), ("b", 0.5, 2)], True),  # 2*0.5 + 2*0.5 = 2 <= 2
        (0.3, [("a", 0.1, 1), ("b", 0.2, 1)], True),  # 0.1 + 0.2 = 0.30000000000000004 ~ 0.3
        (3.0, [("a", 2.0, 1), ("b", 0.5, 3)], False),  # 2*1 + 0.5*3 = 3.5 > 3
    ],
)
def test_guarantees_must_fit_the_partition(capacity, guarantees, fits):
    endpoints = [spec(name, cost, g) for name, cost, g in guarantees]
    if fits:
        PartitionSpec(capacity=capacity, endpoints=endpoints)
        return
    with pytest.raises(ValidationError) as error:
        PartitionSpec(capacity=capacity, endpoints=endpoints)
    message = str(error.value)
    assert "guarantees add up to" in message
    for name, _, _ in guarantees:
        assert name in message  # the message names every endpoint holding a guarantee


@pytest.mark.parametrize(
    "fields, complaint",
    [
        (dict(min_replicas=3, max_replicas=2), "min_replicas 3 > max_replicas 2"),
        (dict(guaranteed_replicas=5, max_replicas=4), "guaranteed_replicas 5 > max_replicas 4"),
        (dict(min_replicas=2, guaranteed_replicas=1), "replicas kept at rest must be guaranteed"),
        (dict(replica_cost=0.0), "greater than 0"),
        (dict(max_replicas=0), "greater than 0"),
        (dict(guaranteed_replicas=-1), "greater than or equal to 0"),
    ],
)
def test_endpoint_refuses_inconsistent_bounds(fields, complaint):
    base = dict(name="a", replica_cost=1.0, max_replicas=4, slo=SLO)
    base.update(fields)
    with pytest.raises(ValidationError, match=complaint):
        EndpointSpec(**base)


def test_partition_refuses_duplicates_and_replicas_larger_than_itself():
    with pytest.raises(ValidationError, match="listed twice"):
        PartitionSpec(capacity=4, endpoints=[spec("a", 1, 0), spec("a", 1, 0)])
    with pytest.raises(ValidationError, match="one replica of 'big' costs 8"):
        PartitionSpec(capacity=4, endpoints=[spec("big", 8, 0)])


def test_specs_are_frozen_and_looked_up_by_name():
    partition = PartitionSpec(capacity=4, endpoints=[spec("a", 1, 1), spec("b", 0.5, 2)])
    assert partition.endpoint("b").guaranteed_accelerators == 1.0  # 2 * 0.5
    with pytest.raises(ValidationError):
        partition.endpoint("a").max_replicas = 9  # type: ignore[misc]
