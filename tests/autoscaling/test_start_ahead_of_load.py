"""Starting the next replica before the last one is full (autoscaling/rising.py): the load's
trend, the start time learned, the wish, and what it does in the policy and the simulator.

Unless a row says otherwise: target_ongoing_per_replica 10, capacity 8, trend over 60 s,
a replica start taken as 60 s until one is seen.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from autoscaling import EndpointState, PolicyState, PolicyTuning, Reason, decide
from autoscaling.desire import desired_from_signals
from autoscaling.rising import LoadTrend, follow_load, learned_start_s, replicas_ahead
from autoscaling.simulate.engine import PROFILES
from autoscaling.simulate.live_check import live_world
from autoscaling.simulate.run import PartitionController, run
from observability.slo import SloTargets

TUNING = PolicyTuning()


# --- the pure parts ---------------------------------------------------------------------

def test_the_trend_reads_a_rise_from_the_recent_level_above_the_slow_one():
    # a first sample sets both levels; no time passed moves nothing
    first = follow_load(LoadTrend(None, None, None), 32.0, 100.0, 60.0)
    assert first == LoadTrend(32.0, 32.0, 100.0, 0.0)
    assert follow_load(first, 50.0, 100.0, 60.0) == first
    # 5 s later at 44: the slow level moves 12 * (1 - e^(-5/60)), the recent one (15 s)
    # 12 * (1 - e^(-5/15)); the rise is their gap over 60 - 15 = 45 s
    trend = follow_load(first, 44.0, 105.0, 60.0)
    slow = 32.0 + 12.0 * (1.0 - math.exp(-5.0 / 60.0))
    recent = 32.0 + 12.0 * (1.0 - math.exp(-5.0 / 15.0))
    assert (trend.level, trend.recent) == (pytest.approx(slow), pytest.approx(recent))
    assert trend.rise_per_s == pytest.approx((recent - slow) / 45.0)
    # a falling load is no rise
    assert follow_load(first, 20.0, 105.0, 60.0).rise_per_s == 0.0


def _fed(loads, every_s: float = 5.0, trend_s: float = 60.0) -> LoadTrend:
    trend = LoadTrend(None, None, None)
    for index, load in enumerate(loads):
        trend = follow_load(trend, load, index * every_s, trend_s)
    return trend


def test_a_linear_ramp_reads_as_its_own_slope_and_a_step_fades():
    """A load rising 0.5/s, sampled every 5 s for ten trend lengths, reads about 0.5/s; a
    jump from 0 to 20 reads as a rise that is gone a few trend lengths later."""
    assert _fed([10.0 + 0.5 * t for t in range(0, 600, 5)]).rise_per_s == pytest.approx(
        0.5, rel=0.02)
    jumped = _fed([0.0] * 12 + [20.0] * 3)
    assert jumped.rise_per_s > 0.05
    assert _fed([0.0] * 12 + [20.0] * 60).rise_per_s < 0.01


@pytest.mark.parametrize("previous, was, now_starting, grew_at, now, expected", [
    (None, True, False, 100.0, 190.0, 90.0),  # grown at 100 s, seen ready at 190 s
    (70.0, True, True, 100.0, 190.0, 70.0),  # still starting: the last one stands
    (70.0, False, False, 100.0, 190.0, 70.0),  # nothing was starting
    (None, True, False, None, 190.0, None),  # no growth known to time it from
])
def test_the_start_time_is_learned_from_growth_to_ready(previous, was, now_starting, grew_at,
                                                         now, expected):
    assert learned_start_s(previous, was, now_starting, grew_at, now) == expected


@pytest.mark.parametrize("recent, rise, lead, sized, expected", [
    # recent 32 lags 0.2/s by 15 s: 32 + 0.2 * (15 + 60) = 47 one start ahead: ceil(4.7)
    (32.0, 0.2, 60.0, 4, 5),
    (32.0, 0.0, 60.0, 4, 0),  # flat: nothing more
    (32.0, 1.0, 60.0, 4, 5),  # 107 coming: still only the next one
    (31.0, 0.1, 45.0, 4, 4),  # 37 coming fits the 4 there are
    (2.0, 2.0 / 60, 60.0, 1, 0),  # a jump from 0 to 2 on one replica of 10: 20% full
    (20.0, 1.0, 60.0, 4, 0),  # 4 replicas 50% full: not nearly full, however fast it rises
])
def test_the_replicas_a_rising_load_needs_one_start_ahead(recent, rise, lead, sized,
                                                          expected):
    trend = LoadTrend(0.0, recent, 0.0, rise)
    assert replicas_ahead(trend, lead, 60.0, 10.0, sized, nearly_full=0.75) == expected


# --- in the policy's first stage --------------------------------------------------------

def _rising(level: float = 20.0, recent: float = 31.0, **fields: object) -> EndpointState:
    return EndpointState(target=4, ready=4, load_level=level, load_recent=recent,
                         load_level_at=100.0, **fields)


@pytest.mark.parametrize("remembered, observed, tuning, expected, driver", [
    # 5 s later at 32 ongoing: recent 31.3 on 4 replicas (78% full), rising
    # (31.3 - 21.0) / 45 = 0.23/s, a start 60 s: 31.3 + 0.23 * 75 = 48.5 -> the 5th now
    (_rising(), dict(running=32, ready=4), TUNING, 5, Reason.RISING),
    # the same with a start seen to take 20 s: 31.3 + 0.23 * 35 = 39.3 fits the 4
    (_rising(start_s=20.0), dict(running=32, ready=4), TUNING, 4, Reason.LOAD),
    # flat at 32: 4
    (_rising(level=32.0, recent=32.0), dict(running=32, ready=4), TUNING, 4, Reason.LOAD),
    # switched off: 4
    (_rising(), dict(running=32, ready=4), PolicyTuning(start_ahead_of_load=False), 4,
     Reason.LOAD),
    # a replica is starting already: its relief is not yet seen, nothing more
    (_rising(), dict(running=32, ready=3), TUNING, 4, Reason.LOAD),
    # the load asks for growth by itself (a step to 45 => 5): no extra one on top
    (_rising(), dict(running=45, ready=4), TUNING, 5, Reason.LOAD),
    # a jump from 0 to 32: recent 9.1 (23% full) though rising fast: nothing more yet
    (_rising(level=0.0, recent=0.0), dict(running=32, ready=4), TUNING, 4, Reason.LOAD),
])
def test_a_rising_load_asks_for_the_next_replica_before_the_last_is_full(
        endpoint, signals, remembered, observed, tuning, expected, driver):
    desire = desired_from_signals(endpoint(), signals(**observed), 4, remembered, tuning, 105.0)
    assert (desire.replicas, desire.driver) == (expected, driver)
    assert desire.trend.at == 105.0


def test_decide_grows_ahead_learns_the_start_and_keeps_it_in_state(endpoint, partition,
                                                                  signals):
    """Through decide(): the growth ahead says RISING; the start it asked for is timed from
    that growth to ready; the trend and the start time survive a save and a load."""
    part = partition(endpoint(), upscale_window_s=0.0)
    state = PolicyState(endpoints={"a": _rising()}, decided_at=100.0)
    grown = decide(part, {"a": signals(32, ready=4)}, state, 105.0)
    assert (grown.decisions["a"].target, grown.decisions["a"].reason) == (5, Reason.LENT)
    assert grown.decisions["a"].driver is Reason.RISING
    assert "rising 0.23/s" in grown.decisions["a"].explanation
    starting = decide(part, {"a": signals(34, ready=4)}, grown.state, 110.0)
    ready = decide(part, {"a": signals(34, ready=5)}, starting.state, 185.0)
    assert ready.state.endpoints["a"].start_s == pytest.approx(80.0)  # grown at 105 s
    saved = PolicyState.from_dict(ready.state.to_dict())
    assert saved == ready.state
    assert saved.endpoints["a"].load_recent == ready.state.endpoints["a"].load_recent


# --- in the simulator: a ramp ----------------------------------------------------------

def _ramp_run(ahead: bool, endpoint, partition):
    """One endpoint on h100-llama-8b (90 s cold starts) whose Poisson load rises from half
    a replica of demand to 4 over 20 minutes, then holds for 10; it starts on 1 replica.
    Its target concurrency (32) is below where the engine's latency breaks its SLO, so the
    load, not a breach, sizes it."""
    profile = PROFILES["h100-llama-8b"]
    prompt, output = 512, 128
    spec = endpoint("ramp", target_ongoing_per_replica=32.0, idle_to_zero_s=None,
                    slo=SloTargets(ttft_p95_s=2.0, itl_p95_s=0.1))
    part = partition(spec, start_ahead_of_load=ahead)
    per_replica_rps = profile.replica_requests_per_s(prompt, output)
    rng = np.random.default_rng(0)
    times, t = [], 0.0
    while True:
        t += rng.exponential(1.0 / (per_replica_rps * (0.5 + 3.5 * min(1.0, t / 1200.0))))
        if t >= 1800.0:
            break
        times.append(t)
    world = live_world(part, profile, {"ramp": times}, 1800.0, initial={"ramp": 1},
                       prompt_tokens=prompt, output_tokens=output, timeout_s=60.0)
    return run(world, PartitionController(world.partition, world.initial_replicas))


def _asked_at(trajectory, replicas: int) -> float:
    reached = trajectory.targets[:, 0] >= replicas
    assert reached.any()
    return float(trajectory.tick_times[np.argmax(reached)])


def test_on_a_ramp_each_replica_is_asked_for_sooner_and_no_request_is_late(endpoint,
                                                                            partition):
    after = _ramp_run(False, endpoint, partition)
    ahead = _ramp_run(True, endpoint, partition)
    assert after.arrivals.sum() == ahead.arrivals.sum()
    sooner = [_asked_at(after, k) - _asked_at(ahead, k) for k in range(2, 5)]
    assert all(gap >= 0 for gap in sooner) and max(sooner) >= 30.0, sooner
    # Growing after the load, requests wait for starts; ahead of it, none do here.
    assert after.lost["cold_start"].sum() > 0
    assert ahead.lost["cold_start"].sum() < after.lost["cold_start"].sum()
    assert ahead.good.sum() > after.good.sum()
    # It holds no more than the load ends up needing (4 replicas of demand: 4 or 5 at the
    # scale-down band), and starts no extra replica on the held load.
    assert ahead.targets[:, 0].max() <= after.targets[:, 0].max() + 1
    assert ahead.capacity_violations == 0
