"""The simulator's baselines: Ray's rule sharing the partition (its delays, first-come
placement, cancellation, replacement after a failure) and the static allocation."""

from __future__ import annotations

import numpy as np

from autoscaling.simulate.baselines import (
    RayDefaultConfig,
    RaySharedBaseline,
    static_allocation,
)
from autoscaling.simulate.observe import ObservedSignals


def _shared(capacity: float, costs: list[float], held: list[int],
            target_ongoing: float = 10.0) -> RaySharedBaseline:
    configs = [RayDefaultConfig(target_ongoing_requests=target_ongoing, min_replicas=0,
                                max_replicas=int(capacity // cost)) for cost in costs]
    return RaySharedBaseline(configs, np.array(held), 10.0, np.array(costs), capacity)


def _observed(ongoing: list[float], ready: list[int], held: list[int]) -> ObservedSignals:
    zeros = np.zeros(len(ready))
    return ObservedSignals(ready=np.array(ready), running=np.array(ongoing, dtype=float),
                           waiting=zeros, arrival_rate=zeros, kv_cache_usage=zeros,
                           ttft_p95=zeros, itl_p95=zeros,
                           ongoing_look_back=np.array(ongoing, dtype=float),
                           held=np.array(held))


# --- placement: first come, first served, when it fits ----------------------------------

def test_pending_replicas_are_placed_in_the_order_asked_when_they_fit():
    # 3 accelerators, A costs 1 and holds 2, B costs 0.5. A asks 1 more, then B 2 more:
    # queue [A, B, B]; 1 accelerator free: A's is placed, B's two wait.
    shared = _shared(3.0, [1.0, 0.5], held=[2, 0])
    assert shared.place(np.array([3, 0]), np.array([2, 0])).tolist() == [3, 0]
    assert shared.place(np.array([3, 2]), np.array([3, 0])).tolist() == [3, 0]
    assert shared.pending == [1, 1]
    # A shrinks to 2: its accelerator goes to B's two waiting halves.
    assert shared.place(np.array([2, 2]), np.array([3, 0])).tolist() == [2, 2]
    assert shared.pending == []


def test_a_replica_that_does_not_fit_does_not_block_a_smaller_one_behind_it():
    # 1.5 accelerators, A (1) holds 1; A asks one more, then B (0.5) one: 0.5 free fits B.
    shared = _shared(1.5, [1.0, 0.5], held=[1, 0])
    shared.pending = [0]
    assert shared.place(np.array([2, 1]), np.array([1, 0])).tolist() == [1, 1]
    assert shared.pending == [0]


def test_a_scale_down_cancels_the_youngest_pending_replicas_first():
    shared = _shared(1.0, [1.0, 1.0], held=[1, 0])
    shared.pending = [0, 1, 0]
    # A wants 2 of its 1 placed + 2 pending: its youngest pending one goes, none placed.
    assert shared.place(np.array([2, 1]), np.array([1, 0])).tolist() == [1, 0]
    assert shared.pending == [0, 1]
    # A wants 0: both of its pending go, then its placed one.
    assert shared.place(np.array([0, 1]), np.array([1, 0])).tolist() == [0, 1]
    assert shared.pending == []


def test_a_failed_replica_is_replaced_behind_what_already_waits():
    # Full partition of 2; B waits for a replica. A's replica crashes (held 2 -> 1): the
    # free accelerator goes to B, first in line; A's replacement waits behind.
    shared = _shared(2.0, [1.0, 1.0], held=[2, 0])
    shared.pending = [1]
    assert shared.place(np.array([2, 1]), np.array([1, 0])).tolist() == [1, 1]
    assert shared.pending == [0]


# --- Ray's delays, stepped tick by tick (10 s ticks) ------------------------------------

def test_scale_up_waits_ray_s_upscale_delay_and_scale_down_its_downscale_delay():
    shared = _shared(8.0, [1.0], held=[1], target_ongoing=10.0)
    # 35 ongoing on 1 replica at 10 each: desired 4. First upward decision at 10 s; Ray
    # scales once 30 s have passed since (upscale_delay_s): at 40 s.
    targets = {now: int(shared.decide(_observed([35], [1], [1]), now)[0])
               for now in (10, 20, 30)}
    assert targets == {10: 1, 20: 1, 30: 1}
    assert shared.decide(_observed([35], [1], [1]), 40).tolist() == [4]
    # Load gone: desired 0, but from 4 only to 1, after downscale_delay_s = 600 s of
    # downward decisions from 50 s: still 4 at 640 s, 1 at 650 s.
    for now in range(50, 650, 10):
        assert shared.decide(_observed([0], [4], [4]), now).tolist() == [4]
    assert shared.decide(_observed([0], [4], [4]), 650).tolist() == [1]


def test_an_endpoint_at_zero_with_requests_gets_one_replica_at_once():
    shared = _shared(4.0, [1.0], held=[0])
    assert shared.decide(_observed([5], [0], [0]), 10).tolist() == [1]


# --- static allocation -------------------------------------------------------------------

def test_static_allocation_is_one_each_then_by_mean_demand(tiny_world):
    # Mean demand of ~2.5 and ~0.2 replicas at target concurrency on 4 accelerators: one
    # each, then A (2.5 / 1 > 0.2 / 1), A again (2.5 / 2 > 0.2 / 1): 3 and 1.
    world = tiny_world(np.zeros((600, 2), dtype=int), capacity=4.0)
    rates = world.per_replica_rps
    demand = np.round(np.array([2.5, 0.2]) * rates).astype(int)
    world = tiny_world(np.tile(demand, (600, 1)), capacity=4.0)
    allocation = static_allocation(world).allocation
    assert allocation.tolist() == [3, 1]
    assert float(allocation @ world.costs) <= world.partition.capacity
