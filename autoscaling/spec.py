"""Partition and endpoint configuration: the validated description the policy decides over."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    model_validator,
)

from observability.slo import SloTargets

# Accelerator sums are floats (costs like 0.5); compare with a little slack so that
# 0.1 + 0.2 is not refused against a capacity of 0.3.
CAPACITY_EPSILON = 1e-9


class EndpointSpec(BaseModel):
    """One served model: what a replica costs, how far it may scale, what it is owed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    replica_cost: PositiveFloat = Field(
        description="accelerators per replica; 0.5 puts two replicas on one accelerator"
    )
    min_replicas: NonNegativeInt = 0
    max_replicas: PositiveInt
    guaranteed_replicas: NonNegativeInt = Field(
        default=0, description="reserved share: granted within one decision when in demand"
    )
    priority: int = Field(
        default=0, description="higher is served first when lending, reclaimed last"
    )
    slo: SloTargets
    target_ongoing_per_replica: PositiveFloat = Field(
        default=16.0,
        description="running + waiting requests one replica carries within its SLO",
    )
    idle_to_zero_s: PositiveFloat | None = Field(
        default=600.0,
        description="seconds without demand before going down to min_replicas; None keeps one warm",
    )

    @model_validator(mode="after")
    def _replica_bounds_are_ordered(self) -> EndpointSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"endpoint {self.name!r}: min_replicas {self.min_replicas} > "
                f"max_replicas {self.max_replicas}"
            )
        if self.guaranteed_replicas > self.max_replicas:
            raise ValueError(
                f"endpoint {self.name!r}: guaranteed_replicas {self.guaranteed_replicas} > "
                f"max_replicas {self.max_replicas}"
            )
        # A floor the partition does not reserve could not always be kept, so every
        # replica held at rest must be part of the guarantee.
        if self.min_replicas > self.guaranteed_replicas:
            raise ValueError(
                f"endpoint {self.name!r}: min_replicas {self.min_replicas} > guaranteed_replicas "
                f"{self.guaranteed_replicas}; replicas kept at rest must be guaranteed"
            )
        return self

    @property
    def guaranteed_accelerators(self) -> float:
        return self.guaranteed_replicas * self.replica_cost


class PolicyTuning(BaseModel):
    """Damping and thresholds shared by every endpoint of a partition."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    upscale_window_s: NonNegativeFloat = Field(
        default=10.0, description="a wish to grow beyond the guarantee must last this long"
    )
    downscale_window_s: NonNegativeFloat = Field(
        default=600.0,
        description="a wish to shrink must last this long (Ray Serve's downscale_delay_s "
        "default, and the ten minutes within which a reversal counts as a flap)"
    )
    hold_after_growth_s: NonNegativeFloat = Field(
        default=600.0,
        description="replicas granted are kept at least this long: no scale-down and no "
        "lending them away, not even to a higher priority, so an endpoint reverses "
        "direction at most once in this long (a guarantee reclaim still takes them)",
    )
    kv_cache_high_water: float = Field(
        default=0.9, gt=0.0, le=1.0, description="KV-cache use that asks for one more replica"
    )
    max_growth_while_starting: float = Field(
        default=2.0,
        ge=1.0,
        description="while replicas start and no sustained rate is known, grow to at most "
        "this factor of the ready replicas",
    )
    scale_down_utilisation: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="shrink only to a size that would carry at most this share of its target "
        "load: a band against flapping at a threshold",
    )
    max_shrink_fraction: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="one scale-down removes at most this share of the replicas",
    )
    rate_sample_min_load: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="learn a replica's sustained arrival rate only when it carries at least "
        "this share of target_ongoing_per_replica",
    )
    drain_hold_s: NonNegativeFloat = Field(
        default=30.0,
        description="a queue that shrinks fast enough to be empty within this long does not "
        "ask for more replicas: they would start after it is gone",
    )
    start_ahead_of_load: bool = Field(
        default=True,
        description="ask for the next replica when a rising load will fill the ready ones "
        "within one replica start, rather than once they are full (autoscaling.rising)",
    )
    start_ahead_from_utilisation: float = Field(
        default=0.75,
        ge=0.0,
        le=1.0,
        description="a rising load asks for the next replica only once the replicas carry "
        "at least this share of their target load (a step up reads as a rise for a while)",
    )
    load_trend_s: float = Field(
        default=60.0,
        gt=0.0,
        description="the load's level is a moving average over about this long; the load "
        "running above it by x reads as rising at x / load_trend_s per second",
    )
    replica_start_s: NonNegativeFloat = Field(
        default=60.0,
        description="how long a replica is taken to start until one has been seen starting: "
        "how far ahead a rising load is projected",
    )
    latency_window_s: NonNegativeFloat = Field(
        default=30.0,
        description="how far back the latency percentiles reach: a breach this soon after "
        "requests queued or replicas started is blamed on that backlog, not on the rate",
    )


class PartitionSpec(BaseModel):
    """A fixed pool of accelerators shared by endpoints under one policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="default", min_length=1)
    capacity: PositiveFloat = Field(description="accelerators (CPU slots on a CPU machine)")
    endpoints: tuple[EndpointSpec, ...] = ()
    tuning: PolicyTuning = PolicyTuning()

    _by_name: dict[str, EndpointSpec] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _endpoints_fit(self) -> PartitionSpec:
        seen: set[str] = set()
        for spec in self.endpoints:
            if spec.name in seen:
                raise ValueError(f"partition {self.name!r}: endpoint {spec.name!r} listed twice")
            seen.add(spec.name)
            if spec.replica_cost > self.capacity + CAPACITY_EPSILON:
                raise ValueError(
                    f"partition {self.name!r}: one replica of {spec.name!r} costs "
                    f"{spec.replica_cost:g} accelerators, more than the capacity {self.capacity:g}"
                )
        reserved = sum(spec.guaranteed_accelerators for spec in self.endpoints)
        if reserved > self.capacity + CAPACITY_EPSILON:
            owed = ", ".join(
                f"{spec.name} ({spec.guaranteed_replicas} x {spec.replica_cost:g} = "
                f"{spec.guaranteed_accelerators:g})"
                for spec in self.endpoints
                if spec.guaranteed_replicas > 0
            )
            raise ValueError(
                f"partition {self.name!r}: guarantees add up to {reserved:g} accelerators, "
                f"more than the capacity {self.capacity:g}: {owed}"
            )
        return self

    def model_post_init(self, __context: object) -> None:
        self._by_name = {spec.name: spec for spec in self.endpoints}

    def endpoint(self, name: str) -> EndpointSpec:
        return self._by_name[name]
