"""The partition autoscaling policy: a pure function from signals and past state to targets.

decide() runs named stages per endpoint, then one partition-wide stage:

    desired_from_signals -> apply_windows -> apply_bounds -> allocate (capacity) -> settle_reason

Time is passed in, never read; nothing here does I/O. The state a decision needs from the
past travels in and out as PolicyState, so a restarted controller resumes where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

from autoscaling.allocation import Claim, allocate
from autoscaling.decision import EndpointDecision, Note, PolicyResult, Reason
from autoscaling.signals import EndpointSignals
from autoscaling.spec import EndpointSpec, PartitionSpec, PolicyTuning, SloTargets
from autoscaling.state import EndpointState, PolicyState


class Desire(NamedTuple):
    """What the signals alone ask for, before any damping or sharing."""

    replicas: int
    driver: Reason  # LOAD, QUEUE, SLO_BREACH, KV_PRESSURE, IDLE_TO_ZERO or HOLD_MISSING_SIGNALS
    demand: bool | None  # None when the load was not observed
    idle_since: float | None
    sustained_rps_per_replica: float | None
    notes: tuple[Note, ...]


class Damped(NamedTuple):
    """A desire after the scale-up and scale-down windows, with the streaks to remember."""

    replicas: int
    delayed: Reason | None  # SCALE_UP_DELAYED or SCALE_DOWN_DELAYED when a window held it
    up_since: float | None
    down_since: float | None
    down_peak: int | None
    notes: tuple[Note, ...] = ()
    owed: bool = False  # grew without waiting: into the guarantee, or a cold start


def desired_from_signals(
    spec: EndpointSpec,
    signals: EndpointSignals | None,
    previous: int,
    remembered: EndpointState,
    tuning: PolicyTuning,
    now: float,
) -> Desire:
    """Replicas the load asks for, nudged up by SLO breaches and a full KV cache.

    Two estimates, the larger wins: ongoing requests / target_ongoing_per_replica, and the
    arrival rate / the rate one replica was seen to sustain. The second guards scale-downs:
    on idle-looking, over-provisioned replicas requests finish fast and few are ongoing, so
    concurrency alone would shrink below what the traffic needs.
    E.g. 40 ongoing on 10 replicas, target 64 => 1; 39 rps, 19.5 rps sustained => 2.
    """
    sustained = remembered.sustained_rps_per_replica
    ongoing = None if signals is None else signals.ongoing
    if signals is None or ongoing is None:
        # Without the load we cannot tell demand from none: hold, never guess or fail.
        return Desire(previous, Reason.HOLD_MISSING_SIGNALS, None, remembered.idle_since,
                      sustained, (("running/waiting not observed; holding {}", (previous,)),))

    arrivals = signals.arrival_rate_rps or 0.0
    if ongoing <= 0 and arrivals <= 0:
        since = now if remembered.idle_since is None else remembered.idle_since
        idle_for = now - since
        if spec.idle_to_zero_s is not None and idle_for >= spec.idle_to_zero_s:
            return Desire(spec.min_replicas, Reason.IDLE_TO_ZERO, False, since, sustained,
                          (("no demand for {:.0f}s (limit {:.0f}s)",
                            (idle_for, spec.idle_to_zero_s)),))
        warm = max(spec.min_replicas, min(previous, 1))
        return Desire(warm, Reason.LOAD, False, since, sustained,
                      (("no demand for {:.0f}s; keeping {} warm", (idle_for, warm)),))

    per_replica = spec.target_ongoing_per_replica
    by_load = max(1, math.ceil(ongoing / per_replica - 1e-9))
    waiting = signals.waiting or 0.0
    driver = Reason.QUEUE if waiting > 0 else Reason.LOAD
    notes: list[Note] = [("{:.1f} ongoing ({:.1f} running + {:.1f} waiting) / {:g} per replica"
                          " -> {}", (ongoing, signals.running, waiting, per_replica, by_load))]
    by_rate = 0
    if sustained and arrivals > 0:
        by_rate = math.ceil(arrivals / sustained - 1e-9)
        notes.append(("{:.1f} rps / {:.1f} rps sustained per replica -> {}",
                      (arrivals, sustained, by_rate)))

    ready = previous if signals.ready_replicas is None else signals.ready_replicas
    starting = ready < previous
    replicas = max(by_load, by_rate)
    if replicas < previous:
        # Shrink only to a size that keeps headroom, e.g. 58 ongoing at 64 per replica stays
        # on 2 replicas with a 0.8 band (58 > 0.8 * 64), where 1 would flap back to 2.
        band = tuning.scale_down_utilisation
        keep = math.ceil(ongoing / (per_replica * band) - 1e-9)
        if sustained and arrivals > 0:
            keep = max(keep, math.ceil(arrivals / (sustained * band) - 1e-9))
        if keep > replicas:
            replicas = min(previous, keep)
            notes.append(("shrinking only to {} ({:.0%} band)", (replicas, band)))
    if starting:
        # Requests queue while replicas start, so the queue overstates the lasting need:
        # trust the arrival rate if a replica's rate is known, else grow by a bounded factor.
        limit = max(previous, by_rate) if sustained else max(
            previous, math.ceil(ready * tuning.max_growth_while_starting))
        if replicas > limit:
            replicas = limit
            notes.append(("{} starting, growth held at {}", (previous - ready, limit)))

    # One more replica per decision on a latency breach or a full KV cache, but not while
    # replicas are starting: their relief is not yet visible in the signals.
    nudge = previous if starting else previous + 1
    breach = _slo_breach(spec.slo, signals)
    if breach is not None:
        notes.append(breach)
        if nudge > replicas:
            replicas, driver = nudge, Reason.SLO_BREACH
    elif (signals.kv_cache_usage is not None
          and signals.kv_cache_usage >= tuning.kv_cache_high_water):
        notes.append(("KV cache {:.0%} used", (signals.kv_cache_usage,)))
        if nudge > replicas:
            replicas, driver = nudge, Reason.KV_PRESSURE
    sustained = _learn_sustained_rate(spec, signals, sustained, ongoing, ready, starting,
                                      breach is not None, tuning)
    return Desire(replicas, driver, True, None, sustained, tuple(notes))


def _learn_sustained_rate(
    spec: EndpointSpec,
    signals: EndpointSignals,
    sustained: float | None,
    ongoing: float,
    ready: int,
    starting: bool,
    breached: bool,
    tuning: PolicyTuning,
) -> float | None:
    """The highest per-replica arrival rate carried within SLO, lowered below any rate at
    which the SLO was breached."""
    if starting or ready <= 0 or not signals.arrival_rate_rps:
        return sustained
    rate = signals.arrival_rate_rps / ready
    if breached:
        # This rate per replica was not carried within SLO: remember a little less than it.
        ceiling = tuning.scale_down_utilisation * rate
        return ceiling if sustained is None else min(sustained, ceiling)
    loaded = ongoing / ready >= tuning.rate_sample_min_load * spec.target_ongoing_per_replica
    queued = (signals.waiting or 0.0) > 0.05 * ongoing
    if loaded and not queued:
        return rate if sustained is None else max(sustained, rate)
    return sustained


def _slo_breach(slo: SloTargets, signals: EndpointSignals) -> Note | None:
    ttft, itl = signals.ttft_p95_s, signals.itl_p95_s
    ttft_over = ttft is not None and ttft > slo.ttft_p95_s
    itl_over = itl is not None and itl > slo.itl_p95_s
    if ttft_over and itl_over:
        return ("TTFT p95 {:.3f}s > {:g}s and ITL p95 {:.1f}ms > {:g}ms",
                (ttft, slo.ttft_p95_s, itl * 1e3, slo.itl_p95_s * 1e3))
    if ttft_over:
        return ("TTFT p95 {:.3f}s > {:g}s", (ttft, slo.ttft_p95_s))
    if itl_over:
        return ("ITL p95 {:.1f}ms > {:g}ms", (itl * 1e3, slo.itl_p95_s * 1e3))
    return None


def apply_windows(
    spec: EndpointSpec,
    desire: Desire,
    previous: int,
    remembered: EndpointState,
    tuning: PolicyTuning,
    now: float,
) -> Damped:
    """Act on a wish only once it has lasted its window; guarantees and cold starts skip it.

    E.g. downscale window 300 s, wishes 2, 3, 2 for 300 s from 4 replicas => 3 (the peak).
    """
    wish = desire.replicas
    if wish == previous or desire.driver in (Reason.HOLD_MISSING_SIGNALS, Reason.IDLE_TO_ZERO):
        # A hold is no evidence either way, so streaks restart; the idle timer is its own window.
        return Damped(wish, None, None, None, None)

    if wish > previous:
        since = now if remembered.up_since is None else remembered.up_since
        waited = now - since
        if waited >= tuning.upscale_window_s:
            return Damped(wish, None, since, None, None)
        # Growth into the guarantee, and the first replica of a cold endpoint, are owed now.
        owed = max(previous, min(wish, spec.guaranteed_replicas), 1 if desire.demand else 0)
        if owed == wish:
            return Damped(owed, None, None, None, None, owed=owed > previous)
        return Damped(owed, Reason.SCALE_UP_DELAYED, since, None, None,
                      (("growth to {} waits for the {:g}s window ({:.0f}s so far)",
                        (wish, tuning.upscale_window_s, waited)),), owed=owed > previous)

    since = now if remembered.down_since is None else remembered.down_since
    peak = wish if remembered.down_peak is None else max(remembered.down_peak, wish)
    waited = now - since
    if waited >= tuning.downscale_window_s:
        # Shrink to the window's peak wish, by at most max_shrink_fraction at once unless
        # there is no demand to misjudge (a reclaim may also have lowered previous).
        floor = previous - math.floor(previous * tuning.max_shrink_fraction)
        step_to = min(previous, peak if desire.demand is False else max(peak, floor))
        return Damped(step_to, None, None, None, None,
                      (("shrinking to {} (window peak {}) after {:.0f}s",
                        (step_to, peak, waited)),))
    return Damped(previous, Reason.SCALE_DOWN_DELAYED, None, since, peak,
                  (("shrinking to {} waits for the {:g}s window ({:.0f}s so far)",
                    (peak, tuning.downscale_window_s, waited)),))


def apply_bounds(spec: EndpointSpec, replicas: int) -> int:
    return max(spec.min_replicas, min(spec.max_replicas, replicas))


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
    does not tear down what is running.
    """
    past = state if state is not None else PolicyState()
    tuning = partition.tuning
    stages: list[tuple[EndpointSpec, EndpointSignals | None, int, Desire, Damped, int]] = []
    claims: list[Claim] = []
    for spec in partition.endpoints:
        observed = signals.get(spec.name)
        remembered = past.endpoints.get(spec.name)
        if remembered is None:
            ready = None if observed is None else observed.ready_replicas
            remembered = EndpointState(target=ready or 0)
        previous = remembered.target
        desire = desired_from_signals(spec, observed, previous, remembered, tuning, now)
        damped = apply_windows(spec, desire, previous, remembered, tuning, now)
        want = apply_bounds(spec, damped.replicas)
        stages.append((spec, observed, previous, desire, damped, want))
        # Without demand, only what it keeps warm is firm: the rest is idle capacity.
        firm = apply_bounds(spec, desire.replicas) if desire.demand is False else None
        claims.append(Claim(spec.replica_cost, spec.priority, spec.guaranteed_replicas,
                            previous, want, firm))

    targets = allocate(partition.capacity, claims)

    decisions: dict[str, EndpointDecision] = {}
    endpoint_states: dict[str, EndpointState] = {}
    allocated = 0.0
    for (spec, observed, previous, desire, damped, want), target in zip(stages, targets):
        reason, notes = settle_reason(spec, desire, damped, want, previous, target)
        decisions[spec.name] = EndpointDecision(
            endpoint=spec.name,
            previous=previous,
            current=None if observed is None else observed.ready_replicas,
            desired=desire.replicas,
            target=target,
            reason=reason,
            driver=desire.driver,
            notes=notes,
        )
        # An upward streak stays ripe until granted, so freed capacity is used at once.
        up_since = damped.up_since if target < desire.replicas else None
        endpoint_states[spec.name] = EndpointState(
            target=target,
            idle_since=desire.idle_since,
            up_since=up_since,
            down_since=damped.down_since,
            down_peak=damped.down_peak,
            sustained_rps_per_replica=desire.sustained_rps_per_replica,
        )
        allocated += target * spec.replica_cost
    return PolicyResult(
        decisions=decisions,
        state=PolicyState(endpoints=endpoint_states, decided_at=now),
        allocated=allocated,
    )
