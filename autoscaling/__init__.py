"""Partition autoscaling: the pure policy that sizes endpoints sharing a pool of accelerators."""

from autoscaling.decision import EndpointDecision, PolicyResult, Reason
from autoscaling.policy import decide
from autoscaling.signals import EndpointSignals
from autoscaling.spec import EndpointSpec, PartitionSpec, PolicyTuning
from autoscaling.state import EndpointState, PolicyState
from observability.slo import SloTargets

__all__ = [
    "EndpointDecision",
    "EndpointSignals",
    "EndpointSpec",
    "EndpointState",
    "PartitionSpec",
    "PolicyResult",
    "PolicyState",
    "PolicyTuning",
    "Reason",
    "SloTargets",
    "decide",
]
