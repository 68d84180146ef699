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


def allocate(capacity: float, claims: Sequence[Claim]) -> list[int]:
    """Replicas per claim, in claim order, whose total cost never exceeds capacity.

    1. Entitlement: min(want, guaranteed) for everyone. The partition's validation keeps the
       sum of guarantees within capacity, so this always fits.
    2. Kept loans: replicas above the entitlement that an endpoint already held and still
       firmly wants. If they no longer fit, take back one replica at a time from the
       borrower with the lowest priority, then the one furthest over its share (in
       accelerators).
    3. New loans: spread what is left one replica at a time, highest priority first, then
       least over its share (water-filling), skipping claims whose replica no longer fits;
       soft wants (an idle endpoint's replicas still inside their scale-down window) last.
    Only a guarantee preempts a firm loan: a new loan never takes one, which would trade
    one cold start for another. Entitlements and kept loans count only firm wants.
    """
    firm = [claim.want if claim.firm is None else min(claim.want, claim.firm)
            for claim in claims]
    granted = [min(f, claim.guaranteed) for f, claim in zip(firm, claims)]
    free = capacity - sum(n * claim.cost for n, claim in zip(granted, claims))

    kept = [
        max(0, min(f, claim.previous) - n) for f, n, claim in zip(firm, granted, claims)
    ]
    kept_cost = sum(k * claim.cost for k, claim in zip(kept, claims))
    if kept_cost > free + CAPACITY_EPSILON:
        kept_cost = _reclaim(claims, granted, kept, kept_cost, free)
    for index, k in enumerate(kept):
        granted[index] += k
    free -= kept_cost

    _lend(claims, firm, granted, free)
    return granted


def _over_share(claim: Claim, replicas: int) -> float:
    return (replicas - claim.guaranteed) * claim.cost


def _reclaim(
    claims: Sequence[Claim], granted: list[int], kept: list[int], kept_cost: float, free: float
) -> float:
    """Shrink kept loans in place until they fit into free; returns their new cost."""
    # Min-heap: lowest priority first, then the largest over-share (negated).
    heap = [
        (claim.priority, -_over_share(claim, granted[i] + kept[i]), i)
        for i, claim in enumerate(claims)
        if kept[i] > 0
    ]
    heapq.heapify(heap)
    while kept_cost > free + CAPACITY_EPSILON and heap:
        _, _, i = heapq.heappop(heap)
        claim = claims[i]
        kept[i] -= 1
        kept_cost -= claim.cost
        if kept[i] > 0:
            heapq.heappush(
                heap, (claim.priority, -_over_share(claim, granted[i] + kept[i]), i)
            )
    return kept_cost


def _lend(claims: Sequence[Claim], firm: Sequence[int], granted: list[int], free: float) -> None:
    """Grant remaining wants from free capacity, in place; soft wants (beyond firm) last."""

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
