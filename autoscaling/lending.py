"""Batch work, the policy's lowest tier: replicas lent to endpoints' batch backlogs out of the
capacity every interactive claim leaves, and the first taken back.

Around the interactive stages of policy.decide:
- interactive_view takes the batch lines in an endpoint's engines out of its signals, so
  batch load never reads as interactive demand (which would hold replicas at the endpoint's
  priority, against the claimants a batch should yield to);
- once allocate() has served every interactive claim, lend() shares what is left among the
  endpoints with a backlog, each up to what its backlog can use (batch_need). Lent replicas
  are in no interactive claim, so any interactive claim takes them back in the same
  decision: batch work yields within one decision period, and resumes when capacity frees.
Pure, time passed in; the replicas lent are remembered as EndpointState.batch_lent.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

from autoscaling.allocation import Claim, allocate
from autoscaling.decision import Note, Reason
from autoscaling.signals import EndpointSignals
from autoscaling.spec import CAPACITY_EPSILON, EndpointSpec, PolicyTuning
from autoscaling.state import EndpointState


class Lending(NamedTuple):
    """One endpoint's wish in the batch tier, after its windows, and the streaks to keep."""

    wish: int  # replicas it would have lent now
    need: int  # what its backlog can use (batch_need), before the windows
    up_since: float | None
    down_since: float | None
    notes: tuple[Note, ...] = ()


def interactive_view(signals: EndpointSignals | None, previous: int, lent: int,
                     ) -> EndpointSignals | None:
    """The signals as interactive traffic alone made them, for an endpoint whose interactive
    share is `previous` replicas with `lent` more lent to batch.

    The batch lines in its engines come out of running first (the batch worker sends none
    while requests wait), then out of waiting; arrivals and KV-cache use shrink by the same
    share, a request of either kind staying about as long (Little's law). E.g. 12 running,
    10 of them batch lines, 6 rps: 2 running, 6 * 2 / 12 = 1 rps. Lent replicas were granted
    last, so they count as the last ready: at most `previous` are the interactive share's.
    """
    if signals is None:
        return None
    ready = signals.ready_replicas
    if lent > 0 and ready is not None:
        ready = min(ready, previous)
    batch = signals.batch_running or 0
    running, waiting = signals.running, signals.waiting
    if batch <= 0 or running is None or waiting is None:
        if ready == signals.ready_replicas:
            return signals
        return dataclasses.replace(signals, ready_replicas=ready)
    ongoing = running + waiting
    from_running = min(running, batch)
    from_waiting = min(waiting, batch - from_running)
    share = (ongoing - from_running - from_waiting) / ongoing if ongoing > 0 else 1.0
    arrivals, kv = signals.arrival_rate_rps, signals.kv_cache_usage
    return dataclasses.replace(
        signals, ready_replicas=ready, running=running - from_running,
        waiting=waiting - from_waiting,
        arrival_rate_rps=None if arrivals is None else arrivals * share,
        kv_cache_usage=None if kv is None else kv * share)


def batch_need(spec: EndpointSpec, backlog: int | None, interactive_ongoing: float | None,
               interactive: int) -> int:
    """Replicas its backlog can use beyond the `interactive` target, within max_replicas.

    Lines share replicas with interactive requests, target_ongoing_per_replica at once in
    all: e.g. 100 lines and 5 requests at 16 per replica fill ceil(105 / 16) = 7; with 1
    interactive replica that is 6 to lend (3 with max_replicas 4). 3 lines beside 2
    requests fill ceil(5 / 16) = 1: they fit on the replica up, none lent.
    """
    if not backlog or backlog <= 0:
        return 0
    load = backlog + max(interactive_ongoing or 0.0, 0.0)
    together = math.ceil(load / spec.target_ongoing_per_replica - 1e-9)
    return max(0, min(spec.max_replicas, together) - interactive)


def lending_wish(spec: EndpointSpec, signals: EndpointSignals | None, need: int, lent: int,
                 interactive: int, remembered: EndpointState, tuning: PolicyTuning,
                 now: float) -> Lending:
    """The replicas to lend beside `interactive` after the windows, from `lent` lent at the
    last decision; never past max_replicas.

    More once the wish has lasted upscale_window_s (a backlog the replicas up clear soon is
    not worth a cold start), except a first replica for an endpoint with none: nothing else
    would run its lines; and none within hold_after_growth_s of a yield, which it would
    reverse (lent, taken back, lent again: two flaps in one window). Fewer once the wish has lasted downscale_window_s (as lines end the
    backlog shrinks, and a lent replica stopped early only to be lent again is a flap),
    except all at once when the backlog is gone. Backlog not observed: hold, lend no more.
    """
    wish = _lending_wish(signals, need, lent, interactive, remembered, tuning, now)
    return wish._replace(wish=min(wish.wish, max(0, spec.max_replicas - interactive)))


def _lending_wish(signals: EndpointSignals | None, need: int, lent: int, interactive: int,
                  remembered: EndpointState, tuning: PolicyTuning, now: float) -> Lending:
    backlog = None if signals is None else signals.batch_backlog
    if backlog is None:
        notes: tuple[Note, ...] = ()
        if lent:
            notes = (("batch backlog not observed; holding {} lent", (lent,)),)
        return Lending(lent, lent, None, None, notes)
    if need == lent:
        return Lending(lent, need, None, None)
    if need > lent:
        since = now if remembered.batch_up_since is None else remembered.batch_up_since
        yielded = remembered.batch_yielded_at
        if yielded is not None and now - yielded < tuning.hold_after_growth_s:
            # Lending again so soon after yielding reverses the yield: a flap.
            return Lending(lent, need, since, None, (
                ("lending {} to batch waits {:g}s after it yielded ({:.0f}s so far)",
                 (need, tuning.hold_after_growth_s, now - yielded)),))
        waited = now - since
        if waited >= tuning.upscale_window_s:
            return Lending(need, need, since, None)
        wish = max(lent, 1 if interactive + lent == 0 else 0)
        return Lending(wish, need, since, None, (
            ("lending {} to batch waits for the {:g}s window ({:.0f}s so far)",
             (need, tuning.upscale_window_s, waited)),))
    if backlog <= 0:
        return Lending(0, 0, None, None)
    since = now if remembered.batch_down_since is None else remembered.batch_down_since
    waited = now - since
    if waited >= tuning.downscale_window_s:
        return Lending(need, need, None, None)
    return Lending(lent, need, None, since, (
        ("lending {} to batch waits for the {:g}s window ({:.0f}s so far)",
         (need, tuning.downscale_window_s, waited)),))


def standing_down(claim: Claim, granted: int) -> int:
    """Replicas of an interactive claim that a batch backlog may borrow: those granted
    beyond its firm want and its guarantee, held only while its scale-down window runs (or,
    idle, kept warm beyond what it keeps warm), unless it grew less than hold_after_growth_s
    ago (damping.growth_shield: shrinking it would reverse its last action).

    A peer that took them would hold them; a batch backlog gives them back in the decision
    that sees the endpoint's demand return, so lending them costs its holder at most the
    start of a replica, and one reversal (down, then up) within its window, the one a flap
    target allows. E.g. 6 granted, window peak 3, no guarantee: 3 may be borrowed.
    """
    if claim.recent:
        return 0
    return max(0, granted - max(claim.firm_want, claim.guaranteed))


def lend(capacity_left: float, specs: Sequence[EndpointSpec], wishes: Sequence[Lending],
         lent_before: Sequence[int], spare: Sequence[int] = ()) -> list[int]:
    """Replicas lent per endpoint out of what the interactive targets leave, and out of
    the `spare` replicas they hold standing down (standing_down; taken by spare_taken).

    allocation.allocate with no guarantees: replicas already lent are kept first, and taken
    back lowest priority first (then furthest over), when what is left no longer holds
    them; then new loans, highest priority first, water-filled. Never more than is left.
    """
    claims = [Claim(spec.replica_cost, spec.priority, 0, before, wish.wish)
              for spec, wish, before in zip(specs, wishes, lent_before)]
    borrowable = sum(n * spec.replica_cost for n, spec in zip(spare, specs))
    return allocate(max(capacity_left, 0.0) + borrowable, claims)


def spare_taken(capacity_left: float, specs: Sequence[EndpointSpec], lent: Sequence[int],
                spare: Sequence[int]) -> list[int]:
    """Spare replicas per endpoint that the loans take beyond capacity_left: the lowest
    priority first, then the one with the most spare, whole replicas until the loans fit.
    E.g. 1 left, loans of 3, spare (2, 2) at priorities (1, 0): (0, 2)."""
    over = sum(n * spec.replica_cost for n, spec in zip(lent, specs)) - max(capacity_left, 0.0)
    taken = [0] * len(specs)
    order = sorted(range(len(specs)), key=lambda i: (specs[i].priority, -spare[i], i))
    for i in order:
        while over > CAPACITY_EPSILON and taken[i] < spare[i]:
            taken[i] += 1
            over -= specs[i].replica_cost
    return taken


def lending_reason(signals: EndpointSignals | None, lending: Lending, before: int, lent: int,
                   ) -> tuple[Reason | None, tuple[Note, ...]]:
    """What settled the replicas lent (None: nothing in this tier), and the notes saying so."""
    notes = lending.notes
    backlog = None if signals is None else signals.batch_backlog
    if backlog is not None and (lent or before or lending.need):
        running = signals.batch_running or 0
        notes += (("batch backlog {} lines ({} running): needs {} more, {} lent",
                   (backlog, running, lending.need, lent)),)
    if lent > before:
        return Reason.BATCH_LENT, notes + (("{} -> {} lent to batch from idle capacity",
                                            (before, lent)),)
    if lent < before:
        if lent < min(lending.wish, before):
            return Reason.BATCH_YIELDED, notes + ((
                "{} replica(s) lent to batch taken back for interactive demand",
                (min(lending.wish, before) - lent,)),)
        return Reason.BATCH_RETURNED, notes + (("{} -> {} lent to batch", (before, lent)),)
    if lent < lending.wish:
        return Reason.CAPACITY, notes + (("wanted {} lent to batch, partition full at {}",
                                          (lending.wish, lent)),)
    if lending.wish < lending.need:
        return Reason.SCALE_UP_DELAYED, notes
    if lending.down_since is not None:
        return Reason.SCALE_DOWN_DELAYED, notes
    return (Reason.BATCH_LENT if lent else None), notes
