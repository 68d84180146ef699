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
from autoscaling.spec import EndpointSpec, PartitionSpec, PolicyTuning
from autoscaling.state import EndpointState, PolicyState
from observability.slo import SloTargets


class Desire(NamedTuple):
    """What the signals alone ask for, before any damping or sharing."""

    replicas: int
    driver: Reason  # LOAD, QUEUE, SLO_BREACH, KV_PRESSURE, IDLE_TO_ZERO or HOLD_MISSING_SIGNALS
    demand: bool | None  # None when the load was not observed
    idle_since: float | None
    sustained_rps_per_replica: float | None
    notes: tuple[Note, ...]
    backlog_at: float | None = None  # last time replicas started or ran above target
    waiting: float | None = None  # requests waiting now, to tell a draining queue next time
    wanted: int | None = None  # the wish of the last decision made with no replica starting
    carried: float | None = None  # highest rps per replica seen within SLO, at any load
    ready: int | None = None  # replicas observed ready now, to tell a settled size next time


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

    Growth follows ongoing requests / target_ongoing_per_replica. The arrival rate / the
    rate one replica was seen to sustain guards scale-downs only: on idle-looking,
    over-provisioned replicas requests finish fast and few are ongoing, so concurrency alone
    would shrink below what the traffic needs. It does not drive growth: the sustained rate
    is sampled at part load (from rate_sample_min_load of the target up), so it understates
    what a replica carries, by up to 1 / 0.5 = 2x, and as a growth signal it held about
    twice the replicas the load needed (measured in the noisy-neighbour simulation).
    E.g. 40 ongoing on 10 replicas, target 64 => 1; 39 rps, 19.5 rps sustained, 0.8 band =>
    shrink only to ceil(39 / 15.6) = 3. From 1 replica, 20 ongoing at target 64 => 1 even if
    39 rps / 19.5 => 2: a breach or a queue will ask for the second if it is needed.
    A queue that drains soon (_drains_soon) asks for nothing more, and while it drains a
    latency breach adds no replica either: the breach is the queue's.
    """
    sustained = remembered.sustained_rps_per_replica
    ongoing = None if signals is None else signals.ongoing
    if signals is None or ongoing is None:
        # Without the load we cannot tell demand from none: hold, never guess or fail.
        return Desire(previous, Reason.HOLD_MISSING_SIGNALS, None, remembered.idle_since,
                      sustained, (("running/waiting not observed; holding {}", (previous,)),),
                      remembered.backlog_at, carried=remembered.carried_rps_per_replica)

    arrivals = signals.arrival_rate_rps or 0.0
    if ongoing <= 0 and arrivals <= 0:
        since = now if remembered.idle_since is None else remembered.idle_since
        idle_for = now - since
        if spec.idle_to_zero_s is not None and idle_for >= spec.idle_to_zero_s:
            return Desire(spec.min_replicas, Reason.IDLE_TO_ZERO, False, since, sustained,
                          (("no demand for {:.0f}s (limit {:.0f}s)",
                            (idle_for, spec.idle_to_zero_s)),), remembered.backlog_at,
                          carried=remembered.carried_rps_per_replica)
        warm = max(spec.min_replicas, min(previous, 1))
        return Desire(warm, Reason.LOAD, False, since, sustained,
                      (("no demand for {:.0f}s; keeping {} warm", (idle_for, warm)),),
                      remembered.backlog_at, carried=remembered.carried_rps_per_replica)

    per_replica = spec.target_ongoing_per_replica
    by_load = max(1, math.ceil(ongoing / per_replica - 1e-9))
    waiting = signals.waiting or 0.0
    driver = Reason.QUEUE if waiting > 0 else Reason.LOAD
    notes: list[Note] = [(("{:.1f} ongoing ({:.1f} running + {:.1f} waiting) / {:g} per replica"
                           " -> {}"), (ongoing, signals.running, waiting, per_replica, by_load))]
    by_rate = 0
    if sustained and arrivals > 0:
        by_rate = math.ceil(arrivals / sustained - 1e-9)
        notes.append(("{:.1f} rps / {:.1f} rps sustained per replica -> {}",
                      (arrivals, sustained, by_rate)))

    ready = previous if signals.ready_replicas is None else signals.ready_replicas
    starting = ready < previous
    # Growth follows the load; the rate estimate only guards shrinking (see the docstring).
    replicas = by_load
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
        proven = _proven_within_guarantee(spec, previous, arrivals, remembered)
        if proven > replicas:
            replicas = proven
            carried = remembered.carried_rps_per_replica
            if carried is None:
                notes.append(("below guarantee {} only to a proven rate: none seen yet, "
                              "holding {}", (spec.guaranteed_replicas, proven)))
            else:
                notes.append(("below guarantee {} only to a proven rate: {:.1f} rps / "
                              "{:.1f} rps carried per replica -> {}",
                              (spec.guaranteed_replicas, arrivals, carried, proven)))
    draining = _drains_soon(waiting, remembered, starting, tuning, now)
    if draining and replicas > previous:
        replicas = previous
        notes.append(("queue draining ({:.0f} -> {:.0f} waiting): holding {}",
                      (remembered.waiting, waiting, previous)))
    if starting:
        # Requests queue while replicas start, so the queue overstates the lasting need:
        # trust the arrival rate if a replica's rate is known, else grow by a bounded factor.
        limit = max(previous, by_rate) if sustained else max(
            previous, math.ceil(ready * tuning.max_growth_while_starting))
        # A wish made before they started, which capacity cut short, read a queue not yet
        # inflated by the start: it is still owed as capacity frees up.
        limit = max(limit, remembered.wanted or 0)
        # Growth into the guarantee is owed at once, starting or not: the replicas are
        # reserved, so an overstated queue costs only the tenant's own share, and holding
        # them back costs another cold start, e.g. 3 ready of 11, queue asks 30, guarantee
        # 16: 16 now rather than 11 now and 16 when the 11 are up, 90 s later.
        limit = max(limit, min(replicas, spec.guaranteed_replicas))
        if replicas > limit:
            replicas = limit
            notes.append(("{} starting, growth held at {}", (previous - ready, limit)))

    # One more replica per decision on a latency breach or a full KV cache, but not while
    # replicas are starting (their relief is not yet visible in the signals) nor while a
    # queue drains soon (the breach is the queue's, and it is going).
    # A backlog: replicas starting, or more requests in flight than the replicas are sized
    # for. Up to one latency window later it still weighs in the percentiles.
    overfull = ready > 0 and ongoing / ready > per_replica
    backlog_at = now if starting or overfull else remembered.backlog_at
    backlog_seen = backlog_at is not None and now - backlog_at <= tuning.latency_window_s
    nudge = previous if starting or draining else previous + 1
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
                                      breach is not None, backlog_seen, tuning)
    carried = _learn_carried_rate(spec, signals, remembered, ongoing, ready, starting,
                                  breach is not None)
    wanted = remembered.wanted if starting else replicas
    return Desire(replicas, driver, True, None, sustained, tuple(notes), backlog_at, waiting,
                  wanted, carried, ready)


def _proven_within_guarantee(spec: EndpointSpec, previous: int, arrivals: float,
                             remembered: EndpointState) -> int:
    """The fewest replicas a guaranteed tenant with demand may shrink to below its guarantee.

    Replicas within a guarantee are reserved for their tenant: giving them back only lends
    them out, while a wrong guess costs the tenant a cold start of breached SLO, more than a
    99% objective allows in an hour (90 s is 2.5%). The load estimate cannot tell: below
    capacity requests finish fast, so the ongoing count falls faster than the traffic. E.g.
    57 rps on 6 replicas of a prefill-heavy model: 156 ongoing, so the 80% band allows
    ceil(156 / 51.2) = 4, but 4 replicas carry 14.3 rps each, over the 12.3 one can, and
    breach. So below its guarantee a tenant shrinks only to a rate per replica it has been
    seen to carry (carried_rps_per_replica): ceil(57 / 10.2) = 6, it stays on 6. With none
    seen yet, it holds. Above the guarantee (loans) this does not apply.
    """
    floor = min(previous, spec.guaranteed_replicas)
    carried = remembered.carried_rps_per_replica
    if carried:
        floor = min(floor, math.ceil(arrivals / carried - 1e-9))
    return floor


def _learn_carried_rate(
    spec: EndpointSpec,
    signals: EndpointSignals,
    remembered: EndpointState,
    ongoing: float,
    ready: int,
    starting: bool,
    breached: bool,
) -> float | None:
    """The highest arrival rate per ready replica seen carried, at any load.

    Carried: within SLO, nothing queued, at most target_ongoing_per_replica in flight (more
    would ask for growth: not a size that lasts), and on as many ready replicas as at the
    previous decision (just after a start or a stop, the requests in flight have not yet
    caught up with the rate). E.g. 12.5 rps on 1 replica 10 s after it started, 46 ongoing
    within SLO, is not carried: 10 s later 118 were ongoing, over the 64 of its target.
    Unlike the sustained rate this is sampled at part load too, so it understates what a
    replica can carry: it proves a size, it does not size.
    """
    carried = remembered.carried_rps_per_replica
    arrivals = signals.arrival_rate_rps or 0.0
    if (starting or breached or ready <= 0 or arrivals <= 0 or remembered.ready != ready
            or _queued(signals, ongoing) or ongoing > ready * spec.target_ongoing_per_replica):
        return carried
    rate = arrivals / ready
    return rate if carried is None else max(carried, rate)


def _drains_soon(waiting: float, remembered: EndpointState, starting: bool,
                 tuning: PolicyTuning, now: float) -> bool:
    """Whether the queue, shrinking since the last decision, empties within drain_hold_s.

    Replicas that run and shrink the queue carry the arrivals and the backlog; replicas
    asked for now start after the backlog is gone and then hold capacity for nothing.
    E.g. 1,133 -> 748 waiting in 10 s drains 38.5 requests/s: 748 / 38.5 = 19 s <= 30 s,
    so no growth for it; 900 -> 880 drains 2/s, 440 s: a lasting overload, grow.
    """
    before, at = remembered.waiting, remembered.waiting_at
    if starting or before is None or at is None or now <= at or not 0 < waiting < before:
        return False
    drain_rps = (before - waiting) / (now - at)
    return waiting / drain_rps <= tuning.drain_hold_s


def _queued(signals: EndpointSignals, ongoing: float) -> bool:
    """Requests wait in the engines: more than 5% of those ongoing are queued."""
    return (signals.waiting or 0.0) > 0.05 * ongoing


def _learn_sustained_rate(
    spec: EndpointSpec,
    signals: EndpointSignals,
    sustained: float | None,
    ongoing: float,
    ready: int,
    starting: bool,
    breached: bool,
    backlog_seen: bool,
    tuning: PolicyTuning,
) -> float | None:
    """The highest per-replica arrival rate carried within SLO, lowered below any rate at
    which the SLO was breached for that rate's sake.

    A breach is blamed on the rate only when nothing else explains it: not while replicas
    start or run above target_ongoing_per_replica (a backlog: too many requests in flight,
    which the load estimate already answers), nor within latency_window_s after one (the
    percentiles still hold the backlog's waits). E.g. 91 rps on 7 replicas just after a
    cold start, TTFT p95 24 s from the drained queue: 0.8 * 91 / 7 = 10.4 rps would be
    learned and ask for ceil(91 / 10.4) = 9 replicas where 4 carry it; the backlog seen 10 s
    earlier (<= 30 s) keeps the rate unlearned instead. A queue on replicas below their
    target concurrency (prefill-bound, say) is no backlog: its breach lowers the rate.
    """
    if starting or ready <= 0 or not signals.arrival_rate_rps:
        return sustained
    rate = signals.arrival_rate_rps / ready
    if breached:
        if backlog_seen or ongoing / ready > spec.target_ongoing_per_replica:
            return sustained
        # This rate per replica was not carried within SLO: remember a little less than it.
        ceiling = tuning.scale_down_utilisation * rate
        return ceiling if sustained is None else min(sustained, ceiling)
    loaded = ongoing / ready >= tuning.rate_sample_min_load * spec.target_ongoing_per_replica
    queued = _queued(signals, ongoing)
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
    No scale-down within hold_after_growth_s of the last growth, whatever the streak: it
    would reverse that growth, a flap. E.g. grown at 600 s, shrink wished since 0 s: at
    700 s the 600 s window has passed but the 600 s hold has not (100 s): hold.
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
    grown_for = None if remembered.grew_at is None else now - remembered.grew_at
    if grown_for is not None and grown_for < tuning.hold_after_growth_s:
        # Shrinking this soon after growing reverses the last action: a flap.
        return Damped(previous, Reason.SCALE_DOWN_DELAYED, None, since, peak,
                      (("shrinking to {} waits {:g}s after the last growth ({:.0f}s so far)",
                        (peak, tuning.hold_after_growth_s, grown_for)),))
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


def _firm(spec: EndpointSpec, desire: Desire) -> int | None:
    """Replicas an endpoint holds against other endpoints' demand; None: all it wants.

    Without demand, only what it keeps warm: the rest waits out its window only while no
    endpoint with demand needs the capacity.
    """
    return apply_bounds(spec, desire.replicas) if desire.demand is False else None


def _shielded(want: int, firm: int | None, remembered: EndpointState, tuning: PolicyTuning,
              now: float) -> int | None:
    """Replicas held beyond firm against every claimant but a guarantee, so as not to flap.

    An endpoint that grew less than hold_after_growth_s ago keeps everything it wants, idle
    or not: taking a replica back so soon reverses its last action, and its demand coming
    back within the window would reverse it again, two flaps in one window. E.g. grown
    1 -> 8 at t = 270 s, idle from 630 s: its 7 idle replicas stay until 870 s (270 + 600);
    from 870 s they are idle capacity as before. A higher priority's loan does not take
    them either (the claim is marked recent, see allocation._outrank): at 1,000 endpoints
    sporadic tenants went to zero when idle, came back within 10 minutes (one flap) and
    lost the new replicas to a priority-1 loan minutes later (a second). Its own scale-down
    waits as long (apply_windows), so no scale-down follows a scale-up by less than the
    hold: a reversal within the hold can only be an up after a down, and two of those need
    a down between them, a hold apart. Only a guarantee reclaim can still cut in.
    """
    if firm is None or not _grew_recently(remembered, tuning, now):
        return None
    return want


def _grew_recently(remembered: EndpointState, tuning: PolicyTuning, now: float) -> bool:
    """Whether the endpoint grew less than hold_after_growth_s ago: shrinking it or lending
    its replicas away now would reverse its last action."""
    return (remembered.grew_at is not None
            and now - remembered.grew_at < tuning.hold_after_growth_s)


def _window_held(spec: EndpointSpec, damped: Damped, want: int, firm: int | None,
                 remembered: EndpointState, tuning: PolicyTuning,
                 now: float) -> tuple[int | None, int | None]:
    """(firm, shielded) of an endpoint with demand whose scale-down waits out its window.

    The replicas above the window's peak wish are held only by hysteresis: against its
    peers (same or lower priority) they stay, as before, but a higher priority whose firm
    want is unmet takes them (allocation._outrank). E.g. a priority-0 endpoint on 6 whose
    wishes in the window peaked at 3: firm 3, shielded 6; a priority-1 tenant one replica
    short of its load takes one, 6 -> 5. Not within hold_after_growth_s of its last growth:
    that would reverse its last action (see _shielded).
    """
    if (firm is not None or damped.delayed is not Reason.SCALE_DOWN_DELAYED
            or damped.down_peak is None or want <= damped.down_peak):
        return firm, None
    if _grew_recently(remembered, tuning, now):
        return firm, None
    return apply_bounds(spec, damped.down_peak), want


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
    stages: list[tuple[EndpointSpec, EndpointSignals | None, EndpointState, Desire, Damped,
                       int]] = []
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
        stages.append((spec, observed, remembered, desire, damped, want))
        firm = _firm(spec, desire)
        shielded = _shielded(want, firm, remembered, tuning, now)
        if shielded is None:
            firm, shielded = _window_held(spec, damped, want, firm, remembered, tuning, now)
        claims.append(Claim(spec.replica_cost, spec.priority, spec.guaranteed_replicas,
                            previous, want, firm, shielded,
                            _grew_recently(remembered, tuning, now)))

    targets = allocate(partition.capacity, claims)

    decisions: dict[str, EndpointDecision] = {}
    endpoint_states: dict[str, EndpointState] = {}
    allocated = 0.0
    for (spec, observed, remembered, desire, damped, want), target in zip(stages, targets):
        previous = remembered.target
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
            carried_rps_per_replica=desire.carried,
            ready=desire.ready,
            backlog_at=desire.backlog_at,
            wanted=desire.wanted,
            grew_at=now if target > previous else remembered.grew_at,
            waiting=desire.waiting,
            waiting_at=now if desire.waiting is not None else remembered.waiting_at,
        )
        allocated += target * spec.replica_cost
    return PolicyResult(
        decisions=decisions,
        state=PolicyState(endpoints=endpoint_states, decided_at=now),
        allocated=allocated,
    )
