"""Damping one endpoint's wish: the scale-up and scale-down windows, its bounds, and the
replicas it holds against other endpoints so that it does not flap. Pure, time passed in."""

from __future__ import annotations

import math
from typing import NamedTuple

from autoscaling.decision import Note, Reason
from autoscaling.desire import Desire
from autoscaling.spec import EndpointSpec, PolicyTuning
from autoscaling.state import EndpointState


class Damped(NamedTuple):
    """A desire after the scale-up and scale-down windows, with the streaks to remember."""

    replicas: int
    delayed: Reason | None  # SCALE_UP_DELAYED or SCALE_DOWN_DELAYED when a window held it
    up_since: float | None
    down_since: float | None
    down_peak: int | None
    notes: tuple[Note, ...] = ()
    owed: bool = False  # grew without waiting: into the guarantee, or a cold start


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


def firm_hold(spec: EndpointSpec, desire: Desire) -> int | None:
    """Replicas an endpoint holds against other endpoints' demand; None: all it wants.

    Without demand, only what it keeps warm: the rest waits out its window only while no
    endpoint with demand needs the capacity.
    """
    return apply_bounds(spec, desire.replicas) if desire.demand is False else None


def growth_shield(want: int, firm: int | None, remembered: EndpointState, tuning: PolicyTuning,
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
    if firm is None or not grew_recently(remembered, tuning, now):
        return None
    return want


def grew_recently(remembered: EndpointState, tuning: PolicyTuning, now: float) -> bool:
    """Whether the endpoint grew less than hold_after_growth_s ago: shrinking it or lending
    its replicas away now would reverse its last action."""
    return (remembered.grew_at is not None
            and now - remembered.grew_at < tuning.hold_after_growth_s)


def window_hold(spec: EndpointSpec, damped: Damped, want: int, firm: int | None,
                 remembered: EndpointState, tuning: PolicyTuning,
                 now: float) -> tuple[int | None, int | None]:
    """(firm, shielded) of an endpoint with demand whose scale-down waits out its window.

    The replicas above the window's peak wish are held only by hysteresis: against its
    peers (same or lower priority) they stay, as before, but a higher priority whose firm
    want is unmet takes them (allocation._outrank). E.g. a priority-0 endpoint on 6 whose
    wishes in the window peaked at 3: firm 3, shielded 6; a priority-1 tenant one replica
    short of its load takes one, 6 -> 5. Not within hold_after_growth_s of its last growth:
    that would reverse its last action (see growth_shield).
    """
    if (firm is not None or damped.delayed is not Reason.SCALE_DOWN_DELAYED
            or damped.down_peak is None or want <= damped.down_peak):
        return firm, None
    if grew_recently(remembered, tuning, now):
        return firm, None
    return apply_bounds(spec, damped.down_peak), want
