"""What one policy decision says: a target per endpoint, each with the reason it took."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from autoscaling.state import PolicyState


class Reason(StrEnum):
    """The stage that settled an endpoint's target, as a short stable code."""

    LOAD = "load"  # follows ongoing requests / target per replica
    QUEUE = "queue"  # as LOAD, with requests waiting in the engine queue
    RISING = "rising"  # the load, rising, fills the ready replicas within one start
    SLO_BREACH = "slo_breach"  # TTFT or ITL p95 above target: one more replica
    KV_PRESSURE = "kv_pressure"  # KV cache near full: one more replica
    GUARANTEE = "guarantee"  # grown within its reserved share, without delay
    LENT = "lent"  # grown beyond its share into idle capacity
    RECLAIMED = "reclaimed"  # borrowed replicas taken back for another's guarantee
    CAPACITY = "capacity"  # wanted more, but the partition is full
    IDLE_TO_ZERO = "idle_to_zero"  # no demand for idle_to_zero_s: down to min_replicas
    HOLD_MISSING_SIGNALS = "hold_missing_signals"  # load not observed: keep the target
    SCALE_UP_DELAYED = "scale_up_delayed"  # wish to grow not yet older than its window
    SCALE_DOWN_DELAYED = "scale_down_delayed"  # wish to shrink not yet older than its window
    BOUNDS = "bounds"  # clipped to min_replicas or max_replicas
    BATCH_LENT = "batch_lent"  # idle capacity lent to its batch backlog, the lowest tier
    BATCH_YIELDED = "batch_yielded"  # replicas lent to batch taken back for interactive demand
    BATCH_RETURNED = "batch_returned"  # batch backlog done or smaller: lent replicas given back


# One clause of an explanation: a str.format template and its arguments. Formatting a
# thousand explanations costs more than deciding, so it waits until someone reads them.
Note = tuple[str, tuple]


@dataclass(frozen=True, slots=True)
class EndpointDecision:
    """One endpoint's outcome: previous -> target, what the signals asked, and why."""

    endpoint: str
    previous: int  # target of the previous decision
    current: int | None  # replicas observed ready, None when not observed
    desired: int  # what the signals asked for, before windows, bounds and capacity
    target: int
    reason: Reason  # the stage that settled the target
    driver: Reason  # the signal behind the desire: LOAD, QUEUE, SLO_BREACH, KV_PRESSURE, ...
    notes: tuple[Note, ...] = ()
    lent: int = 0  # of target, replicas lent to its batch backlog: the first taken back

    @property
    def changed(self) -> bool:
        return self.target != self.previous

    @property
    def explanation(self) -> str:
        """The reason in words, e.g. "130.0 ongoing ... -> 3; 2 -> 3 within guarantee 4"."""
        return "; ".join(template.format(*args) for template, args in self.notes)

    def to_dict(self) -> dict[str, object]:
        """JSON-safe form, for the controller's decision log and the admin API."""
        return {
            "endpoint": self.endpoint,
            "previous": self.previous,
            "current": self.current,
            "desired": self.desired,
            "target": self.target,
            "reason": self.reason.value,
            "driver": self.driver.value,
            "lent_to_batch": self.lent,
            "explanation": self.explanation,
        }


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """A whole partition's decision and the state to pass to the next one."""

    decisions: Mapping[str, EndpointDecision]
    state: PolicyState
    allocated: float  # accelerators held by the targets; never above capacity

    @property
    def targets(self) -> dict[str, int]:
        return {name: decision.target for name, decision in self.decisions.items()}
