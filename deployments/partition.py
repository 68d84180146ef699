"""The partition as every endpoint shares it, whether from the config file or created through
the admin API: the autoscaler's view of it (autoscaling.PartitionSpec) and the admission of a
new or changed endpoint. Pure: the store and Ray are the callers' business.

Admission counts what the partition *guarantees*: a fixed-size endpoint its replicas, an
autoscaled one its guaranteed_replicas. An autoscaled endpoint's max_replicas is not promised
to anyone: beyond its guarantee it borrows what others leave idle and gives it back when
they claim it (oversubscription is what max_replicas is for). E.g. on 2 slots, two endpoints
guaranteed 1 with max_replicas 2 each hold 2 of 2; a third with a guarantee of 0 fits, one
guaranteed 1 does not."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from pydantic import ValidationError

from autoscaling.spec import CAPACITY_EPSILON, EndpointSpec, PartitionSpec
from deployments.config import EndpointConfig, PartitionConfig
from serving.tenancy import Conflict, Invalid


def endpoint_spec(endpoint: EndpointConfig) -> EndpointSpec:
    """The policy's view of an autoscaled endpoint; ValueError if its bounds are not
    ordered (min <= guaranteed <= max)."""
    scaling = endpoint.autoscaling
    assert scaling is not None, f"{endpoint.name} is not autoscaled"
    return EndpointSpec(
        name=endpoint.name, replica_cost=endpoint.accelerators_per_replica,
        min_replicas=scaling.min_replicas, max_replicas=scaling.max_replicas,
        guaranteed_replicas=scaling.guaranteed_replicas, priority=scaling.priority,
        slo=scaling.slo.targets, target_ongoing_per_replica=scaling.target_ongoing_per_replica,
        idle_to_zero_s=scaling.idle_to_zero_s)


def fixed_accelerators(endpoints: Iterable[EndpointConfig]) -> float:
    """What the fixed-size endpoints run: taken out of what the autoscaled ones share."""
    return sum(e.replicas * e.accelerators_per_replica
               for e in endpoints if e.autoscaling is None)


def autoscaled_partition(partition: PartitionConfig, endpoints: Sequence[EndpointConfig],
                         tuning: dict | None = None) -> PartitionSpec | None:
    """The autoscaler's partition over `endpoints` (the config's and the created ones, in
    that order): the autoscaled ones sharing what the fixed-size ones leave. None when none
    is autoscaled; ValueError when they cannot share it (no capacity left, guarantees
    beyond it)."""
    scaled = [e for e in endpoints if e.autoscaling is not None]
    if not scaled:
        return None
    capacity = partition.count - fixed_accelerators(endpoints)
    if capacity <= CAPACITY_EPSILON:
        raise ValueError(f"the fixed-size endpoints take all {partition.count:g} partition "
                         "slots; none are left for the autoscaled endpoints")
    return PartitionSpec(capacity=capacity,
                         tuning=partition.autoscaler.tuning if tuning is None else tuning,
                         endpoints=tuple(endpoint_spec(e) for e in scaled))


def guaranteed(endpoint: EndpointConfig) -> float:
    """Accelerators the partition owes `endpoint` at any time."""
    replicas = (endpoint.replicas if endpoint.autoscaling is None
                else endpoint.autoscaling.guaranteed_replicas)
    return replicas * endpoint.accelerators_per_replica


def check_autoscaling(endpoint: EndpointConfig, field: str) -> None:
    """An autoscaled endpoint's bounds are ordered: min <= guaranteed <= max. Invalid naming
    `field` (e.g. deployment.autoscaling) otherwise."""
    scaling = endpoint.autoscaling
    if scaling is None:
        return
    for name in ("target_ongoing_per_replica", "idle_to_zero_s"):
        value = getattr(scaling, name)
        if value is not None and not math.isfinite(value):  # JSON's Infinity parses
            raise Invalid(f"{field}.{name}", "must be a finite number")
    try:
        endpoint_spec(endpoint)
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise Invalid(field, message.replace(f"endpoint {endpoint.name!r}: ", "")) from None


def check_start(endpoint: EndpointConfig, field: str) -> None:
    """A new autoscaled endpoint starts within min..max replicas. (Only at creation: a later
    change of its bounds leaves `replicas`, which Serve's deployment was made with, alone;
    the controller moves it into the new bounds.)"""
    scaling = endpoint.autoscaling
    if scaling is not None and not scaling.min_replicas <= endpoint.replicas <= \
            scaling.max_replicas:
        raise Invalid(field, f"the endpoint starts with {endpoint.replicas} replicas "
                             f"(`replicas`), outside min_replicas..max_replicas "
                             f"({scaling.min_replicas}..{scaling.max_replicas})")


def check_fits(partition: PartitionConfig, others: Iterable[EndpointConfig],
               new: EndpointConfig, field: str = "deployment") -> None:
    """Conflict unless `new`'s guarantee fits beside what `others` are guaranteed, and one
    of its replicas fits what the fixed-size endpoints leave. The message gives the numbers
    only: whose the other guarantees are is not the caller's to learn."""
    others = list(others)
    held = sum(guaranteed(e) for e in others)
    cost = new.accelerators_per_replica
    unit = f"{partition.accelerator} slots"
    wanted = guaranteed(new)
    if new.autoscaling is None:
        what = f"{new.replicas} x {cost:g} {unit} do"
    else:
        what = f"a guarantee of {new.autoscaling.guaranteed_replicas} x {cost:g} {unit} does"
    if held + wanted > partition.count + CAPACITY_EPSILON:
        raise Conflict(f"{field}: {what} not fit the partition: {held:g} of "
                       f"{partition.count:g} are guaranteed to other endpoints")
    left = partition.count - fixed_accelerators([*others, new])
    if new.autoscaling is not None and cost > left + CAPACITY_EPSILON:
        raise Conflict(f"{field}: one replica takes {cost:g} {unit}; the fixed-size endpoints "
                       f"leave {max(left, 0):g} of {partition.count:g} to autoscaled ones")
