"""The partition policy, stage by stage and whole: each rule with its arithmetic beside it.

Unless a row says otherwise: target_ongoing_per_replica 10, replica_cost 1, capacity 8,
upscale window 10 s, downscale window 300 s, scale-down band 0.8, shrink at most half.
"""

from __future__ import annotations

import pytest

from autoscaling import EndpointSignals, EndpointState, PolicyState, PolicyTuning, Reason, decide
from autoscaling.allocation import Claim, allocate
from autoscaling.damping import apply_windows
from autoscaling.desire import Desire, desired_from_signals

# The rows below were written for a 300 s scale-down window (the default is now 600 s).
TUNING = PolicyTuning(downscale_window_s=300.0)
R = Reason


# --- desired replicas from signals ------------------------------------------------------

@pytest.mark.parametrize(
    "spec_fields, previous, remembered, observed, now, expected, driver",
    [
        # 25 ongoing / 10 per replica = 2.5 -> 3
        ({}, 1, {}, dict(running=25, ready=1), 0, 3, R.LOAD),
        # (20 + 15) / 10 = 3.5 -> 4, and requests wait
        ({}, 2, {}, dict(running=20, waiting=15, ready=2), 0, 4, R.QUEUE),
        # 5 / 10 -> 1; shrinking keeps ceil(5 / (10 * 0.8)) = 1
        ({}, 4, {}, dict(running=5, ready=4), 0, 1, R.LOAD),
        # 18 / 10 -> 2, but 2 replicas would run at 90% > 80% band: keep ceil(18 / 8) = 3
        ({}, 3, {}, dict(running=18, ready=3), 0, 3, R.LOAD),
        # 10 / 10 -> 1, band keeps ceil(10 / 8) = 2; TTFT 1.5 s > 1 s: previous + 1 = 3
        ({}, 2, {}, dict(running=10, ready=2, ttft_p95_s=1.5), 0, 3, R.SLO_BREACH),
        # ITL 90 ms > 50 ms, but 2 of 3 replicas still starting: hold at previous 3
        ({}, 3, {}, dict(running=10, ready=1, itl_p95_s=0.09), 0, 3, R.SLO_BREACH),
        # KV cache 95% >= 90%: previous + 1 = 3
        ({}, 2, {}, dict(running=10, ready=2, kv_cache_usage=0.95), 0, 3, R.KV_PRESSURE),
        # 100 waiting / 10 -> 10, but 1 of 2 ready and no known rate: at most 2 * 1 ready -> 2
        ({}, 2, {}, dict(waiting=100, ready=1, rate=20), 0, 2, R.QUEUE),
        # same, but 5 were wished before the start (capacity granted 2): 5 still owed
        ({}, 2, dict(wanted=5), dict(waiting=100, ready=1, rate=20), 0, 5, R.QUEUE),
        # same, knowing a replica sustains 5 rps: 20 rps / 5 = 4 while starting
        ({}, 2, dict(sustained_rps_per_replica=5.0), dict(waiting=100, ready=1, rate=20),
         0, 4, R.QUEUE),
        # target 64: 40 / 64 -> 1; 39 rps / 19.5 sustained -> 2; band keeps
        # ceil(39 / (19.5 * 0.8)) = ceil(2.5) = 3 of the 10 over-provisioned replicas
        (dict(target_ongoing_per_replica=64), 10, dict(sustained_rps_per_replica=19.5),
         dict(running=40, ready=10, rate=39), 0, 3, R.LOAD),
        # no requests and no arrivals for 100 s of 600 s: keep min(3, 1) = 1 warm
        ({}, 3, dict(idle_since=0.0), dict(ready=3), 100, 1, R.LOAD),
        # idle for 600 s >= 600 s: down to min_replicas 0
        ({}, 1, dict(idle_since=0.0), dict(ready=1), 600, 0, R.IDLE_TO_ZERO),
        # idle long, min_replicas 1 (guaranteed 1): down to 1 only
        (dict(min_replicas=1, guaranteed_replicas=1), 2, dict(idle_since=0.0), dict(ready=2),
         600, 1, R.IDLE_TO_ZERO),
        # idle_to_zero_s None: stays warm at 1 however long it idles
        (dict(idle_to_zero_s=None), 1, dict(idle_since=0.0), dict(ready=1), 10_000, 1, R.LOAD),
        # arrivals but nothing ongoing yet (cold): max(1, ceil(0 / 10)) = 1
        ({}, 0, {}, dict(ready=0, rate=2.0), 0, 1, R.LOAD),
    ],
)
def test_desired_replicas_from_signals(endpoint, signals, spec_fields, previous, remembered,
                                       observed, now, expected, driver):
    spec = endpoint(**spec_fields)
    desire = desired_from_signals(spec, signals(**observed), previous,
                                  EndpointState(target=previous, **remembered), TUNING, now)
    assert (desire.replicas, desire.driver) == (expected, driver)
    assert desire.notes  # every desire can say why


@pytest.mark.parametrize(
    "observed",
    [
        None,  # endpoint absent from the signals
        EndpointSignals(ready_replicas=2, arrival_rate_rps=5.0, running=None, waiting=3.0),
        EndpointSignals(ready_replicas=2, arrival_rate_rps=5.0, running=7.0, waiting=None),
        EndpointSignals(),  # nothing observed at all
    ],
)
def test_missing_load_signals_hold_the_previous_target(endpoint, observed):
    desire = desired_from_signals(endpoint(), observed, 3, EndpointState(target=3), TUNING, 0)
    assert (desire.replicas, desire.driver, desire.demand) == (3, R.HOLD_MISSING_SIGNALS, None)


@pytest.mark.parametrize(
    "remembered_rate, observed, expected_rate",
    [
        # 12 running on 2 ready = 6 per replica >= 0.5 * 10: sample 8 rps / 2 = 4
        (None, dict(running=12, ready=2, rate=8.0), 4.0),
        # a higher sample raises it: max(3, 4) = 4
        (3.0, dict(running=12, ready=2, rate=8.0), 4.0),
        # 6 running on 2 ready = 3 per replica < 5: too idle to learn from, keep 3
        (3.0, dict(running=6, ready=2, rate=8.0), 3.0),
        # requests queue (2 > 5% of 14): not a sustained rate
        (None, dict(running=12, waiting=2, ready=2, rate=8.0), None),
        # TTFT breach at 4 rps per replica: remember below it, min(5, 0.8 * 4) = 3.2
        (5.0, dict(running=12, ready=2, rate=8.0, ttft_p95_s=2.0), 3.2),
    ],
)
def test_sustained_rate_is_learned_while_loaded_and_lowered_by_breaches(
        endpoint, signals, remembered_rate, observed, expected_rate):
    remembered = EndpointState(target=2, sustained_rps_per_replica=remembered_rate)
    desire = desired_from_signals(endpoint(), signals(**observed), 2, remembered, TUNING, 0)
    assert desire.sustained_rps_per_replica == pytest.approx(expected_rate)


# --- damping windows --------------------------------------------------------------------

def _desire(replicas: int, driver: Reason = R.LOAD, demand: bool | None = True) -> Desire:
    return Desire(replicas, driver, demand, None, None, ())


@pytest.mark.parametrize(
    "guaranteed, previous, wish, remembered, now, expected, delayed",
    [
        # 2 -> 5 is beyond guarantee 0: wait the 10 s window (0 s so far)
        (0, 2, 5, {}, 0, 2, R.SCALE_UP_DELAYED),
        # the same wish 10 s later: 10 >= 10, grow to 5
        (0, 2, 5, dict(up_since=0.0), 10, 5, None),
        # 1 -> 5 with guarantee 3: min(5, 3) = 3 at once, the rest waits
        (3, 1, 5, {}, 0, 3, R.SCALE_UP_DELAYED),
        # 0 -> 2 with no guarantee: the first replica of a cold endpoint at once
        (0, 0, 2, {}, 0, 1, R.SCALE_UP_DELAYED),
        # 0 -> 2 within guarantee 4: all of it at once
        (4, 0, 2, {}, 0, 2, None),
        # 4 -> 2: wait the 300 s window, remembering the peak wish 2
        (0, 4, 2, {}, 0, 4, R.SCALE_DOWN_DELAYED),
        # 4 -> 1 after 300 s whose peak wish was 3: shrink to 3
        (0, 4, 1, dict(down_since=0.0, down_peak=3), 300, 3, None),
        # 10 -> 1 after 300 s: at most half at once, 10 - floor(10 * 0.5) = 5
        (0, 10, 1, dict(down_since=0.0, down_peak=1), 300, 5, None),
        # no change wished: nothing to wait for
        (0, 3, 3, dict(up_since=0.0, down_since=0.0, down_peak=1), 50, 3, None),
    ],
)
def test_scale_up_and_scale_down_windows(endpoint, guaranteed, previous, wish, remembered, now,
                                         expected, delayed):
    spec = endpoint(guaranteed_replicas=guaranteed)
    damped = apply_windows(spec, _desire(wish), previous,
                           EndpointState(target=previous, **remembered), TUNING, now)
    assert (damped.replicas, damped.delayed) == (expected, delayed)


def test_holds_and_idle_timeouts_skip_the_windows_and_clear_streaks(endpoint):
    streaks = EndpointState(target=3, up_since=0.0, down_since=0.0, down_peak=2)
    hold = apply_windows(endpoint(), _desire(3, R.HOLD_MISSING_SIGNALS, None), 3, streaks,
                         TUNING, 5)
    idle = apply_windows(endpoint(), _desire(0, R.IDLE_TO_ZERO, False), 3, streaks, TUNING, 5)
    assert (hold.replicas, idle.replicas) == (3, 0)  # idle: straight to 0, no 300 s window
    for damped in (hold, idle):
        assert (damped.up_since, damped.down_since, damped.down_peak) == (None, None, None)


# --- sharing capacity: guarantees, reclaiming, lending ----------------------------------

def _claim(cost: float = 1.0, priority: int = 0, guaranteed: int = 0, previous: int = 0,
           want: int = 0, firm: int | None = None, shielded: int | None = None,
           recent: bool = False) -> Claim:
    return Claim(cost, priority, guaranteed, previous, want, firm, shielded, recent)


@pytest.mark.parametrize(
    "capacity, claims, expected",
    [
        # a's guarantee 2 is taken back from b's 4 borrowed: 4 - 2 = 2 left for b
        (4, [_claim(guaranteed=2, want=2), _claim(previous=4, want=4)], [2, 2]),
        # reclaim the lowest priority borrower first: c (priority 0) before b (priority 1)
        (4, [_claim(guaranteed=2, want=2), _claim(priority=1, previous=2, want=2),
             _claim(previous=2, want=2)], [2, 2, 0]),
        # then the one furthest over its share: c is 3 over, b (guarantee 1) 2 over;
        # need 5 - 3 free = 2 back: c 3 -> 2, then tie at 2 over, b listed first: b 3 -> 2
        (6, [_claim(guaranteed=2, want=2), _claim(guaranteed=1, previous=3, want=3),
             _claim(previous=3, want=3)], [2, 2, 2]),
        # lending water-fills: 5 free replicas, least over its share first: 3 and 2
        (5, [_claim(want=4), _claim(want=4)], [3, 2]),
        # higher priority is lent to first: b takes its 4, a the 1 left
        (5, [_claim(want=4), _claim(priority=1, want=4)], [1, 4]),
        # fractional costs: a 0.5 (0 over), b 1 (0 over), a 0.5 (0.5 over) = 2 accelerators
        (2, [_claim(cost=0.5, want=3), _claim(cost=1.0, want=2)], [2, 1]),
        # what no longer fits is skipped: a 1 + b 0.5 = 1.5, a's next 1 does not fit
        (1.5, [_claim(cost=1.0, want=2), _claim(cost=0.5, want=1)], [1, 1]),
        # kept loans come before new ones, and a new loan never preempts: a keeps 3, b gets 1
        (4, [_claim(previous=3, want=3), _claim(priority=5, want=4)], [3, 1]),
        # at one priority, a borrower that grew within the hold gives last: b was lent its
        # 7th replica just now, c holds 5 from before; a's guarantee takes c's, not b's
        # (furthest over share alone would take b's: a reversal of its last growth)
        (12, [_claim(guaranteed=1, want=1), _claim(previous=7, want=7, recent=True),
              _claim(previous=5, want=5)], [1, 7, 4]),
        # ... but a lower priority still gives first, recent or not
        (12, [_claim(guaranteed=1, want=1), _claim(previous=7, want=7, recent=True),
              _claim(priority=1, previous=5, want=5)], [1, 6, 5]),
        # a guarantee wanted only in part takes only that part: a wants 1 of its 3
        (3, [_claim(guaranteed=3, want=1), _claim(previous=3, want=3)], [1, 2]),
        # an idle holder (no demand) keeps 1 warm; its 3 window-held replicas go to b
        (4, [_claim(previous=4, want=4, firm=1), _claim(want=3)], [1, 3]),
        # ... and keeps them while nobody with demand needs them: 4 - 1 = 3 free for a
        (4, [_claim(previous=4, want=4, firm=1), _claim(want=1)], [3, 1]),
        # an idle guaranteed holder is entitled to what it keeps warm only: min(1, 4) = 1
        (4, [_claim(guaranteed=4, previous=4, want=4, firm=1), _claim(want=4)], [1, 3]),
    ],
)
def test_allocation_shares_capacity(capacity, claims, expected):
    granted = allocate(capacity, claims)
    assert granted == expected
    assert sum(n * c.cost for n, c in zip(granted, claims)) <= capacity + 1e-9


# --- whole decisions --------------------------------------------------------------------

def _state(**targets: int) -> PolicyState:
    return PolicyState(endpoints={name: EndpointState(target=n) for name, n in targets.items()})


def test_guarantee_is_granted_within_one_decision_by_reclaiming(endpoint, partition, signals):
    spec = partition(endpoint("a", guaranteed_replicas=2), endpoint("b"), capacity=4)
    result = decide(spec, {"a": signals(running=25, ready=0),  # 25 / 10 -> 3, guarantee 2
                           "b": signals(running=40, ready=4)},  # 40 / 10 -> 4, all borrowed
                    _state(a=0, b=4), now=0.0)
    a, b = result.decisions["a"], result.decisions["b"]
    assert (a.target, a.reason) == (2, R.GUARANTEE)  # min(3, 2) at once, no window
    assert (b.target, b.reason) == (2, R.RECLAIMED)  # 4 - 2 taken back
    assert result.allocated == 4.0


def test_idle_capacity_is_lent_after_the_upscale_window(endpoint, partition, signals):
    spec = partition(endpoint("a"), endpoint("b"), capacity=4)
    observed = {"a": signals(running=25, ready=1), "b": signals(running=5, ready=1)}
    first = decide(spec, observed, _state(a=1, b=1), now=0.0)
    assert (first.decisions["a"].target, first.decisions["a"].reason) == (
        1, R.SCALE_UP_DELAYED)  # wants 3, window 10 s: 0 s so far
    second = decide(spec, observed, first.state, now=10.0)
    assert (second.decisions["a"].target, second.decisions["a"].reason) == (3, R.LENT)
    assert second.decisions["a"].driver is R.LOAD


def test_a_full_partition_says_capacity(endpoint, partition, signals):
    spec = partition(endpoint("a"), endpoint("b"), capacity=2)
    result = decide(spec, {"a": signals(running=20, ready=2), "b": signals(running=30, ready=0)},
                    _state(a=2, b=0), now=0.0)
    assert (result.decisions["b"].target, result.decisions["b"].reason) == (0, R.CAPACITY)
    assert result.decisions["a"].target == 2  # a's loan is kept: only guarantees preempt


def test_a_wish_cut_by_capacity_is_granted_while_its_replicas_start(endpoint, partition,
                                                                   signals):
    spec = partition(endpoint("a"), endpoint("b"), capacity=6)
    # a: 45 ongoing / 10 -> 5 on 1 ready, after its window; b holds 4 of 6 firmly: a gets 2.
    state = PolicyState(endpoints={"a": EndpointState(target=1, up_since=0.0),
                                   "b": EndpointState(target=4)})
    first = decide(spec, {"a": signals(running=45, ready=1), "b": signals(running=40, ready=4)},
                   state, now=10.0)
    assert (first.decisions["a"].target, first.decisions["a"].reason) == (2, R.CAPACITY)
    # b's load falls to 10 -> 1 and it goes idle; a's second replica is still starting and its
    # queue has grown to 100 waiting. Without the remembered wish of 5, growth while starting
    # is held at 2 x 1 ready = 2; with it, a grows to 5 once b's idle replicas are free.
    later = decide(spec, {"a": signals(running=45, waiting=100, ready=1),
                          "b": signals(ready=4)}, first.state, now=20.0)
    assert later.decisions["a"].target == 5
    assert later.decisions["b"].target == 1  # idle: only what it keeps warm is firm


def test_scale_down_waits_its_window_then_steps(endpoint, partition, signals):
    spec = partition(endpoint("a"), capacity=8, downscale_window_s=300.0)
    observed = {"a": signals(running=10, ready=4)}  # 10 / 10 -> 1, band keeps ceil(10/8) = 2
    state = _state(a=4)
    for now in (0.0, 100.0, 200.0):
        result = decide(spec, observed, state, now=now)
        assert (result.decisions["a"].target, result.decisions["a"].reason) == (
            4, R.SCALE_DOWN_DELAYED)
        state = result.state
    result = decide(spec, observed, state, now=300.0)  # 300 s >= 300 s: 4 -> max(2, 4 - 2)
    assert (result.decisions["a"].target, result.decisions["a"].reason) == (2, R.LOAD)


def test_idle_endpoint_goes_to_zero_and_missing_signals_hold(endpoint, partition, signals):
    spec = partition(endpoint("idle"), endpoint("dark"), capacity=8)
    state = PolicyState(endpoints={"idle": EndpointState(target=1, idle_since=0.0),
                                   "dark": EndpointState(target=3)})
    result = decide(spec, {"idle": signals(ready=1)}, state, now=600.0)  # dark: no signals
    assert (result.decisions["idle"].target, result.decisions["idle"].reason) == (
        0, R.IDLE_TO_ZERO)
    assert (result.decisions["dark"].target, result.decisions["dark"].reason) == (
        3, R.HOLD_MISSING_SIGNALS)


def test_a_fresh_controller_starts_from_what_runs(endpoint, partition, signals):
    spec = partition(endpoint("a"), capacity=8)
    result = decide(spec, {"a": signals(running=30, ready=3)}, None, now=0.0)  # 30/10 -> 3
    assert (result.decisions["a"].previous, result.decisions["a"].target) == (3, 3)


def test_decisions_explain_themselves(endpoint, partition, signals):
    spec = partition(endpoint("a", guaranteed_replicas=2), capacity=4)
    result = decide(spec, {"a": signals(running=25, ready=0, ttft_p95_s=3.0)}, _state(a=0),
                    now=0.0)
    decision = result.decisions["a"]
    assert "25.0 ongoing" in decision.explanation
    assert "TTFT p95 3.000s > 1s" in decision.explanation
    assert "within guarantee 2" in decision.explanation
    assert decision.to_dict()["reason"] == "guarantee"


# --- rules added for the noisy-neighbour targets ---------------------------------------
# Each row's arithmetic is beside it; defaults as at the top of the module, plus
# latency_window_s 30, drain_hold_s 30 and hold_after_growth_s 600.

@pytest.mark.parametrize(
    "remembered, observed, now, expected_rate",
    [
        # TTFT breach at 6 ongoing per replica (< 10 target), no backlog: the rate is to
        # blame, min(5, 0.8 * 8 / 2) = 3.2
        (dict(sustained_rps_per_replica=5.0),
         dict(running=12, ready=2, rate=8.0, ttft_p95_s=2.0), 100, 3.2),
        # breach with 30 ongoing on 2 ready = 15 per replica > 10: too many in flight, keep 5
        (dict(sustained_rps_per_replica=5.0),
         dict(running=30, ready=2, rate=8.0, ttft_p95_s=2.0), 100, 5.0),
        # breach 20 s after a backlog (<= 30 s latency window): the backlog's, keep 5
        (dict(sustained_rps_per_replica=5.0, backlog_at=80.0),
         dict(running=12, ready=2, rate=8.0, ttft_p95_s=2.0), 100, 5.0),
        # breach 40 s after a backlog (> 30 s): blamed on the rate again, 3.2
        (dict(sustained_rps_per_replica=5.0, backlog_at=60.0),
         dict(running=12, ready=2, rate=8.0, ttft_p95_s=2.0), 100, 3.2),
        # a queue on replicas under target (prefill-bound): 6 + 2 waiting = 8 per replica
        # <= 10, no backlog, so the breach lowers it: min(5, 0.8 * 4) = 3.2
        (dict(sustained_rps_per_replica=5.0),
         dict(running=12, waiting=4, ready=2, rate=8.0, itl_p95_s=0.09), 100, 3.2),
    ],
)
def test_a_breach_lowers_the_sustained_rate_only_when_the_rate_explains_it(
        endpoint, signals, remembered, observed, now, expected_rate):
    desire = desired_from_signals(endpoint(), signals(**observed), 2,
                                  EndpointState(target=2, **remembered), TUNING, now)
    assert desire.sustained_rps_per_replica == pytest.approx(expected_rate)


@pytest.mark.parametrize(
    "previous, observed, expected",
    [
        # growth follows the load: 8 ongoing / 10 -> 1, though 20 rps / 5 sustained -> 4
        (1, dict(running=8, ready=1, rate=20.0), 1),
        # ... and the load alone: 35 / 10 -> 4
        (1, dict(running=35, ready=1, rate=20.0), 4),
        # shrinking, the rate guards: 8 / 10 -> 1, but ceil(20 / (5 * 0.8)) = 5 > 4: keep 4
        (4, dict(running=8, ready=4, rate=20.0), 4),
        # ... down to what it carries: ceil(6 / (5 * 0.8)) = 2 of 4
        (4, dict(running=8, ready=4, rate=6.0), 2),
    ],
)
def test_the_rate_estimate_guards_shrinking_and_does_not_drive_growth(
        endpoint, signals, previous, observed, expected):
    remembered = EndpointState(target=previous, sustained_rps_per_replica=5.0)
    desire = desired_from_signals(endpoint(), signals(**observed), previous, remembered,
                                  TUNING, 100)
    assert desire.replicas == expected


@pytest.mark.parametrize(
    "remembered, observed, expected",
    [
        # 300 -> 200 waiting in 10 s drains 10/s: 200 / 10 = 20 s <= 30 s. The 2 replicas
        # carry it; (20 + 200) / 10 -> 22 is not asked for, and the TTFT breach adds none
        (dict(waiting=300.0, waiting_at=90.0),
         dict(running=20, waiting=200, ready=2, ttft_p95_s=5.0), 2),
        # 300 -> 290 drains 1/s: 290 s > 30 s, a lasting overload: (20 + 290) / 10 -> 31,
        # capped by max_replicas 8
        (dict(waiting=300.0, waiting_at=90.0), dict(running=20, waiting=290, ready=2), 8),
        # a growing queue is no drain: (20 + 60) / 10 -> 8
        (dict(waiting=40.0, waiting_at=90.0), dict(running=20, waiting=60, ready=2), 8),
        # nothing remembered: (20 + 40) / 10 -> 6
        ({}, dict(running=20, waiting=40, ready=2), 6),
    ],
)
def test_a_queue_that_drains_soon_asks_for_no_more_replicas(
        endpoint, signals, remembered, observed, expected):
    spec = endpoint()
    desire = desired_from_signals(spec, signals(**observed), 2,
                                  EndpointState(target=2, **remembered), TUNING, 100)
    assert min(spec.max_replicas, desire.replicas) == expected
    assert desire.waiting == observed["waiting"]


@pytest.mark.parametrize(
    "grew_at, now, expected, delayed",
    [
        # shrink wished for 700 s (>= 600), but grown 100 s ago (< 600): hold 4
        (600.0, 700, 4, R.SCALE_DOWN_DELAYED),
        # grown 600 s ago (>= 600): 4 -> max(peak 1, 4 - floor(4 * 0.5)) = 2
        (100.0, 700, 2, None),
        # never grown: the scale-down window alone decides, 2
        (None, 700, 2, None),
    ],
)
def test_no_scale_down_within_the_hold_after_growth(endpoint, grew_at, now, expected, delayed):
    tuning = PolicyTuning(downscale_window_s=600.0)
    remembered = EndpointState(target=4, down_since=0.0, down_peak=1, grew_at=grew_at)
    damped = apply_windows(endpoint(), _desire(1), 4, remembered, tuning, now)
    assert (damped.replicas, damped.delayed) == (expected, delayed)


@pytest.mark.parametrize(
    "capacity, claims, expected",
    [
        # a holds 4, idle (firm 1) but shielded: b of the same priority gets nothing
        (4, [_claim(previous=4, want=4, firm=1, shielded=4), _claim(want=3)], [4, 0]),
        # b of a higher priority takes what it firmly wants, 2, from a's shielded 3
        (4, [_claim(previous=4, want=4, firm=1, shielded=4), _claim(priority=1, want=2)],
         [2, 2]),
        # ... never below a's firm 1: b wants 5, gets 4 - 1 = 3
        (4, [_claim(previous=4, want=4, firm=1, shielded=4), _claim(priority=1, want=5)],
         [1, 3]),
        # fractional: b's 1-accelerator replica takes two of a's 0.5 ones, 2 - 1 = 1 left
        (2, [_claim(cost=0.5, previous=4, want=4, firm=0, shielded=4),
             _claim(priority=1, want=1)], [2, 1]),
        # a guarantee still reclaims shielded replicas: a gets 2 of c's 4
        (4, [_claim(guaranteed=2, want=2), _claim(previous=4, want=4, firm=1, shielded=4)],
         [2, 2]),
        # a firm loan is not shielded but firm: even a higher priority does not take it
        (4, [_claim(previous=4, want=4), _claim(priority=1, want=2)], [4, 0]),
    ],
)
def test_shielded_replicas_yield_to_higher_priority_and_guarantees(capacity, claims,
                                                                    expected):
    granted = allocate(capacity, claims)
    assert granted == expected
    assert sum(n * c.cost for n, c in zip(granted, claims)) <= capacity + 1e-9


def test_recently_grown_idle_endpoint_keeps_its_replicas_for_the_hold(endpoint, partition,
                                                                      signals):
    # a grew to 4 at t = 0 and has been idle since 100 s; b, past its 10 s upscale window,
    # wants 60 / 10 -> 6. At 300 s a is 300 s into its 600 s hold: b keeps its 4, no more.
    spec = partition(endpoint("a"), endpoint("b"), capacity=8)
    state = PolicyState(endpoints={
        "a": EndpointState(target=4, grew_at=0.0, idle_since=100.0),
        "b": EndpointState(target=4, up_since=0.0)})
    observed = {"a": signals(ready=4), "b": signals(running=60, ready=4)}  # b: 60/10 -> 6
    held = decide(spec, observed, state, now=300.0)
    assert (held.decisions["a"].target, held.decisions["b"].target) == (4, 4)
    assert held.decisions["b"].reason is R.CAPACITY
    # at 600 s (600 - 0 >= 600) a holds only the 1 it keeps warm: b takes 6 - 4 = 2 of
    # the 3 others, the spare one stays with a: b 4 -> 6, a 4 -> 2
    lent = decide(spec, observed, held.state, now=600.0)
    assert (lent.decisions["a"].target, lent.decisions["b"].target) == (2, 6)
    assert lent.decisions["a"].reason is R.RECLAIMED
    assert lent.decisions["b"].reason is R.LENT
    assert lent.state.endpoints["b"].grew_at == 600.0  # b's hold starts now


def test_state_saved_before_the_new_fields_still_loads():
    # Format 1 as the previous version wrote it: no backlog_at, grew_at, waiting(_at).
    raw = {"version": 1, "decided_at": 30.0, "endpoints": {"a": {
        "target": 3, "idle_since": None, "up_since": 20.0, "down_since": None,
        "down_peak": None, "sustained_rps_per_replica": 4.5}}}
    state = PolicyState.from_dict(raw)
    a = state.endpoints["a"]
    assert (a.target, a.up_since, a.sustained_rps_per_replica) == (3, 20.0, 4.5)
    assert (a.backlog_at, a.grew_at, a.waiting, a.waiting_at) == (None, None, None, None)
    full = EndpointState(target=2, backlog_at=1.0, grew_at=2.0, waiting=3.5, waiting_at=4.0)
    assert EndpointState.from_dict(full.to_dict()) == full


@pytest.mark.parametrize(
    "priority_of_b, expected_a, expected_b",
    [
        # b (priority 1) wants 60 / 10 -> 6 and holds 2; 8 - 6 - 2 = 0 free. a's window
        # peak is ceil(20 / (10 * 0.8)) = 3, so 6 - 3 = 3 of its replicas are held only by
        # the window and yield to b: a 6 -> 3, b 2 -> 5 (one short of 6, nothing left)
        (1, 3, 5),
        # b of the same priority 0: a's window-held replicas stay, b keeps its 2
        (0, 6, 2),
    ],
)
def test_window_held_replicas_yield_to_a_higher_priority_only(
        endpoint, partition, signals, priority_of_b, expected_a, expected_b):
    spec = partition(endpoint("a"), endpoint("b", priority=priority_of_b), capacity=8)
    state = PolicyState(endpoints={
        "a": EndpointState(target=6, down_since=0.0, down_peak=3),
        "b": EndpointState(target=2, up_since=0.0)})
    observed = {"a": signals(running=20, ready=6), "b": signals(running=60, ready=2)}
    result = decide(spec, observed, state, now=100.0)  # a: 100 s of its 600 s window
    assert (result.decisions["a"].target, result.decisions["b"].target) == (
        expected_a, expected_b)
    assert result.allocated <= 8


# --- rules added for the 1,000-endpoint targets ----------------------------------------
# Each row's arithmetic is beside it; defaults as at the top of the module (target 10 per
# replica, band 0.8, max_growth_while_starting 2, hold_after_growth_s 600).

@pytest.mark.parametrize(
    "guaranteed, carried, observed, expected",
    [
        # 15 ongoing on 6 -> ceil(15 / 10) = 2, band keeps ceil(15 / 8) = 2; but below
        # guarantee 6 only to a proven rate: ceil(10 rps / 1.7 carried) = ceil(5.9) = 6
        (6, 1.7, dict(running=15, ready=6, rate=10.0), 6),
        # the same with 2.5 rps carried: ceil(10 / 2.5) = 4
        (6, 2.5, dict(running=15, ready=6, rate=10.0), 4),
        # nothing carried yet: hold min(previous 6, guarantee 6) = 6
        (6, None, dict(running=15, ready=6, rate=10.0), 6),
        # the load fell: ceil(6 rps / 1.7) = ceil(3.5) = 4 of 6
        (6, 1.7, dict(running=9, ready=6, rate=6.0), 4),
        # guarantee 2: the floor is min(6, 2, 6) = 2, no more than the band's 2
        (2, 1.7, dict(running=15, ready=6, rate=10.0), 2),
        # no guarantee: the load and band alone, 2
        (0, 1.7, dict(running=15, ready=6, rate=10.0), 2),
    ],
)
def test_below_its_guarantee_a_tenant_shrinks_only_to_a_carried_rate(
        endpoint, signals, guaranteed, carried, observed, expected):
    spec = endpoint(guaranteed_replicas=guaranteed, min_replicas=min(1, guaranteed))
    remembered = EndpointState(target=6, carried_rps_per_replica=carried)
    desire = desired_from_signals(spec, signals(**observed), 6, remembered, TUNING, 100)
    assert desire.replicas == expected


@pytest.mark.parametrize(
    "remembered, observed, expected_rate",
    [
        # settled on 2 ready (2 at the last decision too), 6 in flight per replica <= 10,
        # within SLO, nothing queued: 8 rps / 2 = 4 rps per replica carried
        (dict(ready=2), dict(running=12, ready=2, rate=8.0), 4.0),
        # it keeps the highest: max(3, 4) = 4, and max(5, 4) = 5
        (dict(ready=2, carried_rps_per_replica=3.0), dict(running=12, ready=2, rate=8.0), 4.0),
        (dict(ready=2, carried_rps_per_replica=5.0), dict(running=12, ready=2, rate=8.0), 5.0),
        # 1 ready at the last decision, 2 now: requests in flight have not caught up, None
        (dict(ready=1), dict(running=12, ready=2, rate=8.0), None),
        # 30 in flight on 2 = 15 per replica > 10: the load asks for growth, not carried
        (dict(ready=2), dict(running=30, ready=2, rate=8.0), None),
        # a TTFT breach: not carried
        (dict(ready=2), dict(running=12, ready=2, rate=8.0, ttft_p95_s=2.0), None),
        # requests queue (2 > 5% of 14): not carried
        (dict(ready=2), dict(running=12, waiting=2, ready=2, rate=8.0), None),
    ],
)
def test_the_carried_rate_is_learned_on_a_settled_size_within_slo(
        endpoint, signals, remembered, observed, expected_rate):
    desire = desired_from_signals(endpoint(), signals(**observed), 2,
                                  EndpointState(target=2, **remembered), TUNING, 100)
    assert desire.carried == (None if expected_rate is None else pytest.approx(expected_rate))
    assert desire.ready == observed["ready"]  # remembered for the next decision


@pytest.mark.parametrize(
    "guaranteed, expected",
    [
        # 1 of 3 ready, 2 starting; (10 + 100) / 10 -> 11. Without a known rate growth is
        # held at max(previous 3, 2 x 1 ready) = 3 ...
        (0, 3),
        # ... but growth into a guarantee of 6 is owed now: max(3, min(11, 6)) = 6
        (6, 6),
        # a guarantee of 16 owes all 11 the queue asks for: min(11, 16) = 11
        (16, 11),
        # a guarantee of 2 is already held: 3
        (2, 3),
    ],
)
def test_growth_into_the_guarantee_is_not_held_while_replicas_start(
        endpoint, signals, guaranteed, expected):
    spec = endpoint(guaranteed_replicas=guaranteed, max_replicas=16)
    desire = desired_from_signals(spec, signals(running=10, waiting=100, ready=1, rate=20.0), 3,
                                  EndpointState(target=3), TUNING, 100)
    assert desire.replicas == expected


@pytest.mark.parametrize(
    "capacity, claims, expected",
    [
        # a grew less than the hold ago (recent): b of a higher priority does not take a's
        # shielded replicas, b gets 4 - 4 = 0
        (4, [_claim(previous=4, want=4, firm=1, shielded=4, recent=True),
             _claim(priority=1, want=2)], [4, 0]),
        # the same shield held by a scale-down window (not recent) yields: b takes 2
        (4, [_claim(previous=4, want=4, firm=1, shielded=4), _claim(priority=1, want=2)],
         [2, 2]),
        # a guarantee still reclaims recent replicas: b's guarantee 2 takes 2 of a's 4
        (4, [_claim(previous=4, want=4, firm=1, shielded=4, recent=True),
             _claim(priority=1, guaranteed=2, want=2)], [2, 2]),
    ],
)
def test_recently_grown_replicas_yield_to_guarantees_only(capacity, claims, expected):
    granted = allocate(capacity, claims)
    assert granted == expected
    assert sum(n * c.cost for n, c in zip(granted, claims)) <= capacity + 1e-9


def test_a_recent_growth_is_kept_from_a_higher_priority_for_the_hold(endpoint, partition,
                                                                    signals):
    # a (priority 0) grew to 4 at t = 0 and has been idle since 100 s; b (priority 1) holds 4
    # and wants 60 / 10 -> 6. At 300 s a is 300 s into its 600 s hold: b gets none of a's.
    spec = partition(endpoint("a"), endpoint("b", priority=1), capacity=8)
    state = PolicyState(endpoints={
        "a": EndpointState(target=4, grew_at=0.0, idle_since=100.0),
        "b": EndpointState(target=4, up_since=0.0)})
    observed = {"a": signals(ready=4), "b": signals(running=60, ready=4)}
    held = decide(spec, observed, state, now=300.0)
    assert (held.decisions["a"].target, held.decisions["b"].target) == (4, 4)
    # at 600 s (600 - 0 >= 600) a holds only the 1 it keeps warm: b 4 -> 6, a 4 -> 2
    lent = decide(spec, observed, held.state, now=600.0)
    assert (lent.decisions["a"].target, lent.decisions["b"].target) == (2, 6)


def test_state_with_the_carried_rate_round_trips_and_older_state_loads():
    old = EndpointState.from_dict({"target": 3, "sustained_rps_per_replica": 4.5})
    assert (old.carried_rps_per_replica, old.ready) == (None, None)
    full = EndpointState(target=6, carried_rps_per_replica=10.2, ready=6)
    assert EndpointState.from_dict(full.to_dict()) == full
