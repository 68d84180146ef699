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


class LoadTrend(NamedTuple):
    """The load's slow level (an exponential moving average of ongoing requests) and its
    rise per second, read off how far the load runs ahead of that level."""

    level: float | None
    at: float | None
    rise_per_s: float = 0.0


def follow_load(level: float | None, at: float | None, ongoing: float, now: float,
                trend_s: float) -> LoadTrend:
    """Move the level towards ongoing with time constant trend_s, and read the rise.

    A load rising at r per second runs r * trend_s above a level averaged over trend_s,
    so the rise is (ongoing - level) / trend_s, read against the level before this sample.
    E.g. level 20 over 60 s, ongoing 32 => rising 0.2/s; 5 s later the level is
    20 + (32 - 20) * (1 - e^(-5/60)) = 20.96. Noise in one sample moves the level little,
    and a falling load reads as no rise.
    """
    if level is None or at is None or trend_s <= 0 or now <= at:
        return LoadTrend(ongoing if level is None else level, now if at is None else at)
    rise = max(0.0, (ongoing - level) / trend_s)
    weight = 1.0 - math.exp(-(now - at) / trend_s)
    return LoadTrend(level + (ongoing - level) * weight, now, rise)


def learned_start_s(previous_start_s: float | None, was_starting: bool, starting: bool,
                    grew_at: float | None, now: float) -> float | None:
    """How long the endpoint's last replica start took, from the growth that asked for it
    to the decision that saw it ready; the one before if none finished now.

    E.g. grown at 100 s, replicas starting at 105 s and ready at 190 s => 90 s.
    """
    if was_starting and not starting and grew_at is not None and now > grew_at:
        return now - grew_at
    return previous_start_s


def replicas_ahead(ongoing: float, trend: LoadTrend, lead_s: float, per_replica: float,
                   sized: int, nearly_full: float) -> int:
    """Replicas the load will need one start (lead_s) from now, at most one more than the
    sized replicas: the next one, not a guess at the whole rise; 0 while the sized
    replicas carry less than nearly_full of their target load.

    E.g. 32 ongoing at 10 per replica on 4 replicas (80% full), rising 0.2/s, a start
    60 s => 32 + 12 = 44 ongoing by the time a replica is up: ceil(4.4) = 5, so the 5th
    starts now rather than when the 4 are full. A flat load asks for nothing more.
    The gate is for steps: a load that jumps from 0 to 2 on a replica of 4 reads as rising
    2 / 60 per second for a minute, 4 coming a 60 s start later; at 50% full it asks for
    nothing (seen live: without the gate the jump asked for a second replica).
    """
    if trend.rise_per_s <= 0 or per_replica <= 0 or ongoing < nearly_full * sized * per_replica:
        return 0
    coming = ongoing + trend.rise_per_s * lead_s
    return min(sized + 1, math.ceil(coming / per_replica - 1e-9))
