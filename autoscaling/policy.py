"""The partition autoscaling policy: a pure function from signals and past state to targets.

decide() runs named stages per endpoint, then one partition-wide stage:

    interactive_view -> desired_from_signals -> apply_windows -> apply_bounds
        -> allocate (capacity) -> lend (what is left, to batch backlogs) -> settle_reason

The first stage is in desire.py, the windows and holds against flapping in damping.py, the
sharing of capacity in allocation.py, the batch tier in lending.py.
Time is passed in, never read; nothing here does I/O. The state a decision needs from the
past travels in and out as PolicyState, so a restarted controller resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from autoscaling.allocation import Claim, allocate
from autoscaling.damping import (
    Damped,
    apply_bounds,
    apply_windows,
    firm_hold,
    grew_recently,
    growth_shield,
    window_hold,
)
from autoscaling.decision import EndpointDecision, Note, PolicyResult, Reason
from autoscaling.desire import Desire, desired_from_signals
from autoscaling.lending import (
    Lending,
    batch_need,
    interactive_view,
    lend,
    lending_reason,
    lending_wish,
    spare_taken,
    standing_down,
)
from autoscaling.signals import EndpointSignals
from autoscaling.spec import EndpointSpec, PartitionSpec, PolicyTuning
from autoscaling.state import EndpointState, PolicyState


def settle_reason(
    spec: EndpointSpec, desire: Desire, damped: Damped, want: int, previous: int, target: int
) -> tuple[Reason, tuple[Note, ...]]:
    """Name the stage that settled the target, most binding first, and say why in words."""
    why = desire.notes + damped.notes
    if target < want:
        if target < previous:
            return Reason.RECLAIMED, why + ((
                "wanted {} but {} replica(s) taken back for other endpoints' demand",
                (want, previous - target)),)
        return Reason.CAPACITY, why + (("wanted {}, partition full at {}", (want, target)),)
    if desire.driver is Reason.HOLD_MISSING_SIGNALS:
        return Reason.HOLD_MISSING_SIGNALS, why
    if desire.driver is Reason.IDLE_TO_ZERO and target < previous:
        return Reason.IDLE_TO_ZERO, why + (("down to {}", (target,)),)
    if target > previous:
        g = spec.guaranteed_replicas
        if target > g:
            return Reason.LENT, why + (("{} -> {}, {} beyond guarantee {} from idle capacity",
                                        (previous, target, target - g, g)),)
        if damped.owed:
            return Reason.GUARANTEE, why + (("{} -> {} within guarantee {}, without delay",
                                             (previous, target, g)),)
        return desire.driver, why + (("{} -> {}", (previous, target)),)
    if damped.delayed is not None:
        return damped.delayed, why
    if want != damped.replicas:
        return Reason.BOUNDS, why + (("bounded to [{}, {}] at {}",
                                      (spec.min_replicas, spec.max_replicas, want)),)
    return desire.driver, why


def decide(
    partition: PartitionSpec,
    signals: Mapping[str, EndpointSignals | None],
    state: PolicyState | None,
    now: float,
) -> PolicyResult:
    """Target replicas for every endpoint of the partition, each with its reason.

    An endpoint absent from signals is held. An endpoint unknown to state starts from its
    observed ready replicas (or zero), so a first decision after a restart without state
    does not tear down what is running. The interactive stages see each endpoint without
    the replicas lent to its batch backlog; the batch tier (lending.py) then lends what the
    interactive targets leave.
    """
    past = state if state is not None else PolicyState()
    tuning = partition.tuning
    stages: list[Stages] = []
    claims: list[Claim] = []
    for spec in partition.endpoints:
        observed = signals.get(spec.name)
        remembered = past.endpoints.get(spec.name)
        if remembered is None:
            ready = None if observed is None else observed.ready_replicas
            remembered = EndpointState(target=ready or 0)
        lent = min(remembered.batch_lent or 0, remembered.target)
        previous = remembered.target - lent
        interactive = interactive_view(observed, previous, lent)
        desire = desired_from_signals(spec, interactive, previous, remembered, tuning, now)
        damped = apply_windows(spec, desire, previous, remembered, tuning, now)
        want = apply_bounds(spec, damped.replicas)
        stages.append(Stages(spec, observed, interactive, remembered, lent, desire, damped,
                             want))
        firm = firm_hold(spec, desire)
        shielded = growth_shield(want, firm, remembered, tuning, now)
        if shielded is None:
            firm, shielded = window_hold(spec, damped, want, firm, remembered, tuning, now)
        claims.append(Claim(spec.replica_cost, spec.priority, spec.guaranteed_replicas,
                            previous, want, firm, shielded,
                            grew_recently(remembered, tuning, now)))

    targets = allocate(partition.capacity, claims)
    wishes = [_lending(s, target, tuning, now) for s, target in zip(stages, targets)]
    left = partition.capacity - sum(t * s.spec.replica_cost for s, t in zip(stages, targets))
    spare = [standing_down(claim, target) for claim, target in zip(claims, targets)]
    lent_now = lend(left, partition.endpoints, wishes, [s.lent for s in stages], spare)
    borrowed = spare_taken(left, partition.endpoints, lent_now, spare)
    targets = [target - n for target, n in zip(targets, borrowed)]

    decisions: dict[str, EndpointDecision] = {}
    endpoint_states: dict[str, EndpointState] = {}
    allocated = 0.0
    for s, target, lending, lent, lent_away in zip(stages, targets, wishes, lent_now,
                                                   borrowed):
        spec, remembered, desire, damped = s.spec, s.remembered, s.desire, s.damped
        previous = remembered.target - s.lent
        reason, notes = settle_reason(spec, desire, damped, s.want, previous, target)
        if lent_away:
            notes += (("{} replica(s) standing down lent to batch backlogs", (lent_away,)),)
        batch_reason, batch_notes = lending_reason(s.observed, lending, s.lent, lent)
        # The batch tier explains the decision when its tenants' share did not move and
        # said no more than what drives it; its notes are kept either way.
        if batch_reason is not None and target == previous and (
                lent != s.lent or reason is desire.driver):
            reason = batch_reason
        decisions[spec.name] = EndpointDecision(
            endpoint=spec.name,
            previous=remembered.target,
            current=None if s.observed is None else s.observed.ready_replicas,
            desired=desire.replicas,
            target=target + lent,
            reason=reason,
            driver=desire.driver,
            notes=notes + batch_notes,
            lent=lent,
        )
        # An upward streak stays ripe until granted, so freed capacity is used at once.
        up_since = damped.up_since if target < desire.replicas else None
        endpoint_states[spec.name] = EndpointState(
            target=target + lent,
            idle_since=desire.idle_since,
            up_since=up_since,
            down_since=damped.down_since,
            down_peak=damped.down_peak,
            sustained_rps_per_replica=desire.sustained_rps_per_replica,
            carried_rps_per_replica=desire.carried,
            ready=desire.ready,
            backlog_at=desire.backlog_at,
            wanted=desire.wanted,
            grew_at=now if target > previous else remembered.grew_at,
            waiting=desire.waiting,
            waiting_at=now if desire.waiting is not None else remembered.waiting_at,
            load_level=desire.trend.level,
            load_recent=desire.trend.recent,
            load_level_at=desire.trend.at,
            start_s=desire.start_s,
            batch_lent=lent or None,
            batch_up_since=lending.up_since if lent < lending.need else None,
            batch_down_since=lending.down_since,
            batch_yielded_at=now if batch_reason is Reason.BATCH_YIELDED
            else remembered.batch_yielded_at,
        )
        allocated += (target + lent) * spec.replica_cost
    return PolicyResult(
        decisions=decisions,
        state=PolicyState(endpoints=endpoint_states, decided_at=now),
        allocated=allocated,
    )


class Stages(NamedTuple):
    """One endpoint on its way through decide(): what was seen, remembered and wished."""

    spec: EndpointSpec
    observed: EndpointSignals | None
    interactive: EndpointSignals | None  # observed without its batch lines (lending.py)
    remembered: EndpointState
    lent: int  # replicas lent to its batch backlog at the last decision
    desire: Desire
    damped: Damped
    want: int  # the interactive share's wish after windows and bounds


def _lending(s: Stages, interactive: int, tuning: PolicyTuning, now: float) -> Lending:
    """What s's batch backlog wishes lent beside its `interactive` target."""
    backlog = None if s.observed is None else s.observed.batch_backlog
    ongoing = None if s.interactive is None else s.interactive.ongoing
    need = batch_need(s.spec, backlog, ongoing, interactive)
    return lending_wish(s.spec, s.observed, need, s.lent, interactive, s.remembered, tuning, now)
