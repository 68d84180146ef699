"""Policy state carried from one decision to the next, and its JSON-safe round trip."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

STATE_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class EndpointState:
    """What the policy remembers of one endpoint between decisions.

    A streak is a run of consecutive decisions that wished to move the same way; the
    damping windows act once a streak is old enough. down_peak is the largest wish seen
    during a downward streak, so a scale-down never undercuts a recent need.
    sustained_rps_per_replica is the highest arrival rate per ready replica seen while the
    endpoint was loaded and met its SLO: what one replica is known to carry.
    backlog_at is the last decision that saw replicas start or run above their target
    concurrency: latency percentiles reach back a window, so a breach soon after it belongs
    to that backlog. grew_at is the last decision that raised the target: replicas granted
    less than hold_after_growth_s ago are neither shrunk nor lent away, so an endpoint does
    not flap. waiting and waiting_at are the queue last seen and when, to tell a draining
    queue from a lasting one. wanted is the wish of the last decision made while no replica
    was starting: growth it asked for that capacity cut short stays owed while replicas start.
    carried_rps_per_replica is the highest arrival rate per ready replica seen carried within
    SLO at or below target concurrency, at any load: below its guarantee a tenant shrinks only
    to a rate per replica it has carried. ready is the replicas seen ready at the last
    decision: a rate is carried only on a size that was already up then.
    batch_lent is how many replicas of target are lent to the endpoint's batch backlog, the
    lowest tier (autoscaling.lending): everything else about the endpoint (streaks, holds,
    previous) is about the rest, its interactive share. batch_up_since and batch_down_since
    are the streaks of wishes to lend it more or fewer; batch_yielded_at the last decision
    that took lent replicas back for interactive demand (no more is lent for a hold after).
    load_level, load_recent and load_level_at are the load's slow and recent levels (moving
    averages of ongoing requests) and when they were last moved: the recent one above the
    slow one is a rising load (autoscaling.rising). start_s is how long the last replica start took, from the growth
    that asked for it to ready: how far ahead a rising load is projected.
    Fields added after format 1 are optional: a state saved without them loads with None.
    """

    target: int = 0
    idle_since: float | None = None
    up_since: float | None = None
    down_since: float | None = None
    down_peak: int | None = None
    sustained_rps_per_replica: float | None = None
    backlog_at: float | None = None
    grew_at: float | None = None
    waiting: float | None = None
    waiting_at: float | None = None
    wanted: int | None = None
    carried_rps_per_replica: float | None = None
    ready: int | None = None
    batch_lent: int | None = None
    batch_up_since: float | None = None
    batch_down_since: float | None = None
    batch_yielded_at: float | None = None
    load_level: float | None = None
    load_recent: float | None = None
    load_level_at: float | None = None
    start_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> EndpointState:
        def number(key: str) -> float | None:
            value = raw.get(key)
            return None if value is None else float(value)

        down_peak = raw.get("down_peak")
        return cls(
            target=int(raw.get("target", 0)),
            idle_since=number("idle_since"),
            up_since=number("up_since"),
            down_since=number("down_since"),
            down_peak=None if down_peak is None else int(down_peak),
            sustained_rps_per_replica=number("sustained_rps_per_replica"),
            backlog_at=number("backlog_at"),
            grew_at=number("grew_at"),
            waiting=number("waiting"),
            waiting_at=number("waiting_at"),
            wanted=None if raw.get("wanted") is None else int(raw["wanted"]),
            carried_rps_per_replica=number("carried_rps_per_replica"),
            ready=None if raw.get("ready") is None else int(raw["ready"]),
            batch_lent=None if raw.get("batch_lent") is None else int(raw["batch_lent"]),
            batch_up_since=number("batch_up_since"),
            batch_down_since=number("batch_down_since"),
            batch_yielded_at=number("batch_yielded_at"),
            load_level=number("load_level"),
            load_recent=number("load_recent"),
            load_level_at=number("load_level_at"),
            start_s=number("start_s"),
        )


@dataclass(frozen=True, slots=True)
class PolicyState:
    """Everything decide() needs from its past; persist it to survive a controller restart."""

    endpoints: Mapping[str, EndpointState] = field(default_factory=dict)
    decided_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_FORMAT_VERSION,
            "decided_at": self.decided_at,
            "endpoints": {name: state.to_dict() for name, state in self.endpoints.items()},
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PolicyState:
        version = raw.get("version", STATE_FORMAT_VERSION)
        if version != STATE_FORMAT_VERSION:
            raise ValueError(f"policy state format {version!r} is not {STATE_FORMAT_VERSION}")
        decided_at = raw.get("decided_at")
        return cls(
            endpoints={
                str(name): EndpointState.from_dict(state)
                for name, state in raw.get("endpoints", {}).items()
            },
            decided_at=None if decided_at is None else float(decided_at),
        )
