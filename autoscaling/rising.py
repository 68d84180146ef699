"""Starting the next replica before the last one is full: the load's trend, how long a
replica takes to start, and the wish the two make together. Pure, time passed in.

Growth that follows the load asks for a replica once the load is already over what the
ready replicas carry, and the replica serves a start later (a minute or more): meanwhile
requests queue and miss their SLO. A load that rises steadily is seen coming: where it
will be one start from now is what the replicas must carry when a replica asked for now
is up.
"""

from __future__ import annotations

import math
from typing import NamedTuple


RECENT_SHARE = 0.25  # the recent level averages over this share of the slow one's time


class LoadTrend(NamedTuple):
    """Two exponential moving averages of the ongoing requests, a slow one (level, over
    trend_s) and a recent one (over a quarter of it), and the rise they read."""

    level: float | None
    recent: float | None
    at: float | None
    rise_per_s: float = 0.0


def follow_load(trend: LoadTrend, ongoing: float, now: float, trend_s: float) -> LoadTrend:
    """Move both levels towards ongoing, and read the rise between them.

    A load rising at r per second runs r * tau behind an average over tau, so the recent
    level (tau = trend_s / 4) runs r * 3 / 4 * trend_s above the slow one: the rise is their
    gap over that. E.g. over 60 s, recent 29, level 20 => (29 - 20) / 45 = 0.2/s. Averages,
    not the last sample, so that one bunch of arrivals is no rise; a falling load is none.
    """
    if trend.level is None or trend.recent is None or trend.at is None:
        return LoadTrend(ongoing, ongoing, now)
    if trend_s <= 0 or now <= trend.at:
        return trend
    recent_s = RECENT_SHARE * trend_s
    elapsed = now - trend.at
    level = trend.level + (ongoing - trend.level) * (1.0 - math.exp(-elapsed / trend_s))
    recent = trend.recent + (ongoing - trend.recent) * (1.0 - math.exp(-elapsed / recent_s))
    return LoadTrend(level, recent, now, max(0.0, (recent - level) / (trend_s - recent_s)))


def learned_start_s(previous_start_s: float | None, was_starting: bool, starting: bool,
                    grew_at: float | None, now: float) -> float | None:
    """How long the endpoint's last replica start took, from the growth that asked for it
    to the decision that saw it ready; the one before if none finished now.

    E.g. grown at 100 s, replicas starting at 105 s and ready at 190 s => 90 s.
    """
    if was_starting and not starting and grew_at is not None and now > grew_at:
        return now - grew_at
    return previous_start_s


def replicas_ahead(trend: LoadTrend, lead_s: float, trend_s: float, per_replica: float,
                   sized: int, nearly_full: float) -> int:
    """Replicas the load will need one start (lead_s) from now, at most one more than the
    sized replicas: the next one, not a guess at the whole rise; 0 while the recent load
    is below nearly_full of what the sized replicas carry at their target.

    The recent level lags a rising load by rise * trend_s / 4, so the load one start ahead
    is recent + rise * (trend_s / 4 + lead_s). E.g. recent 32 at 10 per replica on 4
    replicas (80% full), rising 0.2/s, 60 s trend and start => 32 + 0.2 * 75 = 47: ceil(4.7)
    = 5, so the 5th starts now rather than when the 4 are full. A flat load asks for nothing.
    The gate is for steps: a jump reads as a rise for a minute; seen live, a jump to half a
    replica's target (4), with one 5 s window at 3.5 ongoing, asked for a second replica.
    """
    recent = trend.recent
    if (recent is None or trend.rise_per_s <= 0 or per_replica <= 0
            or recent < nearly_full * sized * per_replica):
        return 0
    coming = recent + trend.rise_per_s * (RECENT_SHARE * trend_s + lead_s)
    return min(sized + 1, math.ceil(coming / per_replica - 1e-9))
