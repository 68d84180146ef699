"""What the live controller decides over: the partition's spec, and where each of its
endpoints runs on Ray Serve. The endpoints of the config file are fixed for the platform's
life; those created through the admin API come and go, so the view is re-read from the
platform store (through a callable `deployments/` hands in) before each decision."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from autoscaling.spec import PartitionSpec

DEFAULT_PARTITION = "default"


@dataclass(frozen=True)
class PartitionView:
    """`spec` None: no endpoint is autoscaled now (there is nothing to decide).
    `deployments`: endpoint -> (Serve application, deployment). `initial`: the replicas an
    endpoint's deployment was made with, where the controller starts when it first sees it
    (a created endpoint's first replica is still loading: zero are running, not zero
    wanted). `deployed`: the replicas Serve was given for it, where they differ (Serve
    takes no deployment of 0 replicas: one created at zero is deployed with one, which the
    first decision takes back)."""

    spec: PartitionSpec | None
    deployments: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    initial: Mapping[str, int] = field(default_factory=dict)
    deployed: Mapping[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name if self.spec is not None else DEFAULT_PARTITION

    @property
    def endpoints(self):
        return () if self.spec is None else self.spec.endpoints


# Reads the current view (blocking: the controller runs it in a thread); raises when it
# cannot (the store away, a spec that does not validate): the controller keeps the last one.
PartitionSource = Callable[[], PartitionView]
