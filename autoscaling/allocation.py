"""Sharing a partition's capacity: guarantees first, then kept loans, then new loans."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import NamedTuple

from autoscaling.spec import CAPACITY_EPSILON


class Claim(NamedTuple):
    """One endpoint's wish after damping and bounds, as the allocator sees it."""

    cost: float
    priority: int
    guaranteed: int
    previous: int
    want: int
    # Replicas the endpoint holds on to: all it wants, except that an endpoint without
    # demand holds only what it keeps warm; the rest waits out its window only while no
    # endpoint with demand needs the capacity.
    firm: int | None = None
    # Replicas beyond firm that the endpoint keeps against claimants of its own or a lower
    # priority: recently granted replicas, or ones a scale-down window holds (see
    # damping.growth_shield and damping.window_hold).
    shielded: int | None = None
    # Grew less than hold_after_growth_s ago: taking a replica back would reverse its last
    # action, so its shielded replicas yield to guarantees only, not to a higher priority.
    recent: bool = False

    @property
    def firm_want(self) -> int:
        """What the endpoint firmly wants: all it wants, or what it keeps warm if less."""
        return self.want if self.firm is None else min(self.want, self.firm)


def allocate(capacity: float, claims: Sequence[Claim]) -> list[int]:
    """Replicas per claim, in claim order, whose total cost never exceeds capacity.

    1. Entitlement: min(want, guaranteed) for everyone. The partition's validation keeps the
       sum of guarantees within capacity, so this always fits.
    2. Kept loans: replicas above the entitlement that an endpoint already held and still
       firmly wants. If they no longer fit, take back one replica at a time from the
       borrower with the lowest priority, then one that did not grow within
       hold_after_growth_s (recent) before one that did, then the one furthest over its
       share (in accelerators).
    3. New loans: spread what is left one replica at a time, highest priority first, then
       least over its share (water-filling), skipping claims whose replica no longer fits;
       soft wants (an idle endpoint's replicas still inside their scale-down window) last.
    Only a guarantee preempts a firm loan: a new loan never takes one, which would trade
    one cold start for another. Entitlements and kept loans count only firm wants.
    4. Shielded replicas (beyond firm, kept only so that an endpoint does not flap) are kept
       loans against the same and lower priorities; a higher priority whose firm want is
       still unmet takes them, lowest priority and furthest over share first, unless their
       endpoint grew less than hold_after_growth_s ago (recent): those yield to guarantees
       only.
    """
    firm = [claim.firm_want for claim in claims]
    held = [f if claim.shielded is None else min(claim.want, max(f, claim.shielded))
            for f, claim in zip(firm, claims)]
    granted = [min(f, claim.guaranteed) for f, claim in zip(firm, claims)]
    free = capacity - sum(n * claim.cost for n, claim in zip(granted, claims))

    kept = [
        max(0, min(h, claim.previous) - n) for h, n, claim in zip(held, granted, claims)
    ]
    kept_cost = sum(k * claim.cost for k, claim in zip(kept, claims))
    if kept_cost > free + CAPACITY_EPSILON:
        kept_cost = _reclaim(claims, granted, kept, kept_cost, free)
    for index, k in enumerate(kept):
        granted[index] += k
    free -= kept_cost

    free = _lend(claims, firm, granted, free)
    if any(h > f for h, f in zip(held, firm)):
        _outrank(claims, firm, granted, free)
    return granted


def _outrank(claims: Sequence[Claim], firm: Sequence[int], granted: list[int],
             free: float) -> None:
    """A firm want left unmet takes shielded replicas from lower priorities, in place.

    Shielded replicas (held beyond firm only so that their endpoint does not flap) yield
    to a higher priority: e.g. a guaranteed tenant (priority 1) one replica short of its SLO
    takes it from a priority-0 endpoint whose scale-down window holds more than it wishes
    for. Not from one that grew less than hold_after_growth_s ago (recent): that would
    reverse its last action, and its demand returning would reverse it again.
    """
    unmet = sorted((i for i, claim in enumerate(claims) if granted[i] < firm[i]),
                   key=lambda i: (-claims[i].priority, i))
    for i in unmet:
        claim = claims[i]
        while granted[i] < firm[i]:
            donors = sorted(
                (j for j, other in enumerate(claims)
                 if other.priority < claim.priority and granted[j] > firm[j]
                 and not other.recent),
                key=lambda j: (claims[j].priority, -_over_share(claims[j], granted[j]), j))
            taken: list[int] = []
            room = free
            for j in donors:
                if room + CAPACITY_EPSILON >= claim.cost:
                    break
                spare = granted[j] - firm[j]
                while spare and room + CAPACITY_EPSILON < claim.cost:
                    taken.append(j)
                    room += claims[j].cost
                    spare -= 1
            if room + CAPACITY_EPSILON < claim.cost:
                break  # not enough shielded capacity below this priority
            for j in taken:
                granted[j] -= 1
            granted[i] += 1
            free = room - claim.cost


def _over_share(claim: Claim, replicas: int) -> float:
    return (replicas - claim.guaranteed) * claim.cost


def _reclaim(
    claims: Sequence[Claim], granted: list[int], kept: list[int], kept_cost: float, free: float
) -> float:
    """Shrink kept loans in place until they fit into free; returns their new cost.

    Among borrowers of the lowest priority, those that grew less than hold_after_growth_s
    ago give last: taking from them reverses their last action (a flap), and their demand,
    still there, asks for the replica again within the window (a second). E.g. a borrower
    lent a 7th replica 10 s ago and one holding 5 since long before, both priority 0, a
    guarantee needing 1: the 5 gives it, where the furthest over share alone would pick the
    7, which went 6, 7, 6, 7 in two minutes on the diurnal-sporadic simulation.
    """
    def key(i: int) -> tuple[int, bool, float, int]:
        # Min-heap: lowest priority first, then not recent, then the largest over-share.
        claim = claims[i]
        return (claim.priority, claim.recent, -_over_share(claim, granted[i] + kept[i]), i)

    heap = [key(i) for i in range(len(claims)) if kept[i] > 0]
    heapq.heapify(heap)
    while kept_cost > free + CAPACITY_EPSILON and heap:
        i = heapq.heappop(heap)[-1]
        kept[i] -= 1
        kept_cost -= claims[i].cost
        if kept[i] > 0:
            heapq.heappush(heap, key(i))
    return kept_cost


def _lend(claims: Sequence[Claim], firm: Sequence[int], granted: list[int],
          free: float) -> float:
    """Grant remaining wants from free capacity, in place; soft wants (beyond firm) last.
    Returns the capacity left free."""

    def key(i: int) -> tuple[bool, int, float, int]:
        claim = claims[i]
        return (granted[i] >= firm[i], -claim.priority, _over_share(claim, granted[i]), i)

    heap = [key(i) for i, claim in enumerate(claims) if claim.want > granted[i]]
    heapq.heapify(heap)
    while heap:
        i = heapq.heappop(heap)[-1]
        claim = claims[i]
        if claim.cost > free + CAPACITY_EPSILON:
            continue  # this replica does not fit; smaller ones might
        granted[i] += 1
        free -= claim.cost
        if claim.want > granted[i]:
            heapq.heappush(heap, key(i))
    return free
