"""What the signals alone ask of one endpoint: the policy's first stage, and what it learns.

desired_from_signals reads the load (ongoing requests), nudges it up for an SLO breach or a
full KV cache, and learns the arrival rates a replica carries; pure, time passed in.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from autoscaling.decision import Note, Reason
from autoscaling.rising import LoadTrend, follow_load, learned_start_s, replicas_ahead
from autoscaling.signals import EndpointSignals
from autoscaling.spec import EndpointSpec, PolicyTuning
from autoscaling.state import EndpointState
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
    trend: LoadTrend = LoadTrend(None, None, None)  # the load's levels, and its rise
    start_s: float | None = None  # how long the last replica start took



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
    past_trend = LoadTrend(remembered.load_level, remembered.load_recent,
                           remembered.load_level_at)
    if signals is None or ongoing is None:
        # Without the load we cannot tell demand from none: hold, never guess or fail.
        return Desire(previous, Reason.HOLD_MISSING_SIGNALS, None, remembered.idle_since,
                      sustained, (("running/waiting not observed; holding {}", (previous,)),),
                      remembered.backlog_at, carried=remembered.carried_rps_per_replica,
                      trend=past_trend, start_s=remembered.start_s)

    trend = follow_load(past_trend, max(0.0, ongoing), now, tuning.load_trend_s)
    ready = previous if signals.ready_replicas is None else signals.ready_replicas
    starting = ready < previous
    was_starting = remembered.ready is not None and remembered.ready < previous
    start_s = learned_start_s(remembered.start_s, was_starting, starting, remembered.grew_at,
                              now)
    arrivals = signals.arrival_rate_rps or 0.0
    if ongoing <= 0 and arrivals <= 0:
        since = now if remembered.idle_since is None else remembered.idle_since
        idle_for = now - since
        if spec.idle_to_zero_s is not None and idle_for >= spec.idle_to_zero_s:
            return Desire(spec.min_replicas, Reason.IDLE_TO_ZERO, False, since, sustained,
                          (("no demand for {:.0f}s (limit {:.0f}s)",
                            (idle_for, spec.idle_to_zero_s)),), remembered.backlog_at,
                          carried=remembered.carried_rps_per_replica, trend=trend,
                          start_s=start_s)
        warm = max(spec.min_replicas, min(previous, 1))
        return Desire(warm, Reason.LOAD, False, since, sustained,
                      (("no demand for {:.0f}s; keeping {} warm", (idle_for, warm)),),
                      remembered.backlog_at, carried=remembered.carried_rps_per_replica,
                      trend=trend, start_s=start_s)

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
                notes.append((("below guarantee {} only to a proven rate: none seen yet, "
                               "holding {}"), (spec.guaranteed_replicas, proven)))
            else:
                notes.append((("below guarantee {} only to a proven rate: {:.1f} rps / "
                               "{:.1f} rps carried per replica -> {}"),
                              (spec.guaranteed_replicas, arrivals, carried, proven)))
    if tuning.start_ahead_of_load and not starting and replicas <= previous:
        # A rising load asks for the next replica one start before it fills the ready ones.
        lead = tuning.replica_start_s if start_s is None else start_s
        ahead = replicas_ahead(trend, lead, tuning.load_trend_s, per_replica,
                               max(replicas, previous), tuning.start_ahead_from_utilisation)
        if ahead > replicas:
            notes.append(("recent load {:.1f} rising {:.2f}/s, one start ({:.0f}s) ahead -> {}",
                          (trend.recent, trend.rise_per_s, lead, ahead)))
            if ahead > previous:
                driver = Reason.RISING
            replicas = ahead
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
                  wanted, carried, ready, trend, start_s)


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
