"""The batch tier of the partition policy: idle capacity lent to batch backlogs after every
interactive need is served, the first taken back, and batch load never read as interactive.

Unless a row says otherwise: target_ongoing_per_replica 10 (so 10 lines fill a replica),
replica_cost 1, upscale window 10 s, downscale window 600 s.
"""

from __future__ import annotations

import pytest

from autoscaling import EndpointSignals, EndpointState, PolicyState, Reason, decide
from autoscaling.allocation import Claim
from autoscaling.lending import (
    Lending,
    batch_need,
    interactive_view,
    lend,
    spare_taken,
    standing_down,
)
from autoscaling.spec import CAPACITY_EPSILON

R = Reason


def _state(**endpoints: tuple[int, int]) -> PolicyState:
    """{name: (target, of it lent to batch)}."""
    return PolicyState(endpoints={
        name: EndpointState(target=target, batch_lent=lent or None)
        for name, (target, lent) in endpoints.items()})


def _batch(backlog: int | None, running: int = 0, ready: int | None = None,
           **load: float) -> EndpointSignals:
    """An endpoint's signals with `running` batch lines in its engines (and in `running`)."""
    engines = load.pop("interactive", 0.0) + running
    return EndpointSignals(ready_replicas=ready, arrival_rate_rps=load.pop("rate", 0.0),
                           running=engines, waiting=load.pop("waiting", 0.0),
                           batch_backlog=backlog, batch_running=running, **load)


def _allocated(result, partition) -> float:
    return sum(result.decisions[s.name].target * s.replica_cost for s in partition.endpoints)


# --- the pure parts -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("observed", "previous", "lent", "expected"),
    [
        # no batch line in the engines, nothing lent: the signals as they are
        (EndpointSignals(ready_replicas=2, running=8, waiting=0, arrival_rate_rps=4.0), 2, 0,
         EndpointSignals(ready_replicas=2, running=8, waiting=0, arrival_rate_rps=4.0)),
        # 12 running, 9 of them batch lines: 3 running, 8 rps * 3 / 12 = 2 rps, KV 0.5 -> 0.125
        (EndpointSignals(ready_replicas=1, running=12, waiting=0, arrival_rate_rps=8.0,
                         kv_cache_usage=0.5, batch_running=9), 1, 0,
         EndpointSignals(ready_replicas=1, running=3, waiting=0, arrival_rate_rps=2.0,
                         kv_cache_usage=0.125, batch_running=9)),
        # only batch lines (5 running, 3 held at a gateway): idle as far as tenants go
        (EndpointSignals(ready_replicas=0, running=5, waiting=3, arrival_rate_rps=2.0,
                         batch_running=8), 0, 0,
         EndpointSignals(ready_replicas=0, running=0, waiting=0, arrival_rate_rps=0.0,
                         batch_running=8)),
        # 4 ready, 3 of them lent: the interactive share has the first ready, 1
        (EndpointSignals(ready_replicas=4, running=1, waiting=0), 1, 3,
         EndpointSignals(ready_replicas=1, running=1, waiting=0)),
        # load not observed: still unknown (the policy holds)
        (EndpointSignals(ready_replicas=2, batch_running=4), 2, 0,
         EndpointSignals(ready_replicas=2, batch_running=4)),
        (None, 0, 0, None),
    ],
)
def test_the_interactive_view_takes_batch_lines_out(observed, previous, lent, expected):
    assert interactive_view(observed, previous, lent) == expected


@pytest.mark.parametrize(
    ("backlog", "interactive_ongoing", "interactive", "max_replicas", "expected"),
    [
        (None, 0.0, 0, 8, 0),  # not observed
        (0, 5.0, 1, 8, 0),  # nothing to run
        (100, 5.0, 1, 8, 7),  # ceil(105 / 10) = 11, within max 8, less 1 interactive -> 7
        (100, 5.0, 1, 4, 3),  # ceil(105 / 10) = 11 bounded by max 4, less 1 -> 3
        (3, 2.0, 1, 8, 0),  # ceil(5 / 10) = 1: the lines fit on the replica up
        (15, 0.0, 0, 8, 2),  # ceil(15 / 10) = 2, nothing interactive
        (30, 0.0, 5, 8, 0),  # ceil(30 / 10) = 3 fit on the 5 interactive replicas
    ],
)
def test_batch_need_is_what_the_backlog_can_use(endpoint, backlog, interactive_ongoing,
                                                interactive, max_replicas, expected):
    spec = endpoint("b", max_replicas=max_replicas)
    assert batch_need(spec, backlog, interactive_ongoing, interactive) == expected


@pytest.mark.parametrize(
    ("capacity_left", "priorities", "wishes", "before", "expected"),
    [
        (3.0, (0, 0), (2, 2), (0, 0), [2, 1]),  # water-filled: 1 each, then a's second
        (3.0, (0, 1), (2, 2), (0, 0), [1, 2]),  # the higher priority first
        (2.0, (0, 1), (2, 2), (2, 0), [2, 0]),  # what is lent is kept before new loans
        (1.0, (0, 1), (2, 2), (2, 1), [0, 1]),  # short: the lowest priority yields first
        (0.0, (0, 0), (2, 2), (2, 2), [0, 0]),  # nothing left: everything taken back
    ],
)
def test_lend_shares_what_is_left(endpoint, capacity_left, priorities, wishes, before,
                                  expected):
    specs = [endpoint("a", priority=priorities[0]), endpoint("b", priority=priorities[1])]
    lendings = [Lending(w, w, None, None) for w in wishes]
    assert lend(capacity_left, specs, lendings, before) == expected


@pytest.mark.parametrize(
    ("claim", "granted", "expected"),
    [
        # cost, priority, guaranteed, previous, want, firm, shielded, recent
        (Claim(1.0, 0, 0, 6, 6, 3, 6), 6, 3),  # its window holds 3 beyond its peak wish
        (Claim(1.0, 0, 4, 6, 6, 3, 6), 6, 2),  # never into its guarantee
        (Claim(1.0, 0, 0, 6, 6, 3, 6, True), 6, 0),  # grew lately: shrinking reverses it
        (Claim(1.0, 0, 0, 6, 6), 6, 0),  # wants all it holds
        (Claim(1.0, 0, 0, 5, 5, 1), 5, 4),  # idle: beyond what it keeps warm
        (Claim(1.0, 0, 0, 6, 6, 3, 6), 4, 1),  # granted less than it held
    ],
)
def test_replicas_standing_down_are_what_a_batch_may_borrow(claim, granted, expected):
    assert standing_down(claim, granted) == expected


def test_borrowed_replicas_come_from_the_lowest_priority_first(endpoint):
    specs = [endpoint("a", priority=1), endpoint("b", priority=0), endpoint("bulk")]
    # 1 accelerator left, 4 lent: 3 borrowed, b's first (priority 0), then a's.
    assert spare_taken(1.0, specs, [0, 0, 4], [2, 2, 0]) == [1, 2, 0]
    assert spare_taken(4.0, specs, [0, 0, 4], [2, 2, 0]) == [0, 0, 0]  # it fits: none


# --- whole decisions ----------------------------------------------------------------------

def test_idle_capacity_is_lent_to_a_backlog_after_the_upscale_window(endpoint, partition,
                                                                     signals):
    spec = partition(endpoint("chat", guaranteed_replicas=2, priority=1),
                     endpoint("bulk", max_replicas=4), capacity=4)
    observed = {"chat": signals(ready=0), "bulk": _batch(100, ready=0)}
    first = decide(spec, observed, _state(chat=(0, 0), bulk=(0, 0)), now=0.0)
    bulk = first.decisions["bulk"]
    # Nothing runs its lines: the first replica is lent at once, the rest wait 10 s.
    assert (bulk.target, bulk.lent, bulk.reason) == (1, 1, R.BATCH_LENT)
    assert "waits for the 10s window" in bulk.explanation
    second = decide(spec, observed, first.state, now=10.0)
    bulk = second.decisions["bulk"]
    # ceil(100 / 10) = 10, bounded by max_replicas 4, all idle: 4 lent
    assert (bulk.target, bulk.lent, bulk.reason) == (4, 4, R.BATCH_LENT)
    assert "batch backlog 100 lines (0 running): needs 4 more, 4 lent" in bulk.explanation
    assert second.state.endpoints["bulk"].batch_lent == 4
    assert second.decisions["chat"].target == 0
    assert bulk.to_dict()["lent_to_batch"] == 4


def test_nothing_is_lent_while_interactive_demand_uses_the_capacity(endpoint, partition,
                                                                    signals):
    spec = partition(endpoint("chat", guaranteed_replicas=2, priority=1),
                     endpoint("bulk", max_replicas=4), capacity=4)
    # chat: 40 ongoing / 10 -> 4 on 4 replicas (2 of them a loan it holds)
    observed = {"chat": signals(running=40, ready=4), "bulk": _batch(500, ready=0)}
    for now in (0.0, 10.0, 20.0):
        result = decide(spec, observed, _state(chat=(4, 0), bulk=(0, 0)), now=now)
        assert result.decisions["chat"].target == 4
        assert (result.decisions["bulk"].target, result.decisions["bulk"].lent) == (0, 0)
        assert result.decisions["bulk"].reason is R.CAPACITY
        assert "lent to batch, partition full at 0" in result.decisions["bulk"].explanation
        assert _allocated(result, spec) <= spec.capacity + CAPACITY_EPSILON


def test_a_returning_guarantee_takes_lent_replicas_back_in_one_decision(endpoint, partition,
                                                                       signals):
    spec = partition(endpoint("chat", guaranteed_replicas=3, priority=1),
                     endpoint("bulk", max_replicas=4), capacity=4)
    # bulk runs 4 lent replicas, 40 lines in them; chat's tenant comes back: 25 -> 3.
    observed = {"chat": signals(running=25, ready=0), "bulk": _batch(300, running=40, ready=4)}
    result = decide(spec, observed, _state(chat=(0, 0), bulk=(4, 4)), now=0.0)
    chat, bulk = result.decisions["chat"], result.decisions["bulk"]
    assert (chat.target, chat.reason) == (3, R.GUARANTEE)  # within its guarantee, at once
    assert (bulk.target, bulk.lent, bulk.reason) == (1, 1, R.BATCH_YIELDED)
    assert "3 replica(s) lent to batch taken back for interactive demand" in bulk.explanation
    assert result.state.endpoints["bulk"].batch_yielded_at == 0.0
    assert result.allocated == 4.0
    # 40 batch lines in bulk's engines are not its tenants' demand: no interactive want.
    assert bulk.desired == 0


def test_after_yielding_batch_resumes_when_capacity_frees_not_before_the_hold(endpoint,
                                                                             partition):
    spec = partition(endpoint("bulk", max_replicas=4), capacity=4)
    # bulk yielded 3 of 4 at 0 s; the interactive tenant that took them is gone again.
    state = PolicyState(endpoints={"bulk": EndpointState(target=1, batch_lent=1,
                                                         batch_yielded_at=0.0)})
    observed = {"bulk": _batch(300, running=10, ready=1)}
    held = decide(spec, observed, state, now=100.0)
    assert (held.targets["bulk"], held.decisions["bulk"].reason) == (1, R.SCALE_UP_DELAYED)
    assert "lending 4 to batch waits 600s after it yielded (100s so far)" in (
        held.decisions["bulk"].explanation)
    # 600 s after the yield (the wish older than its 10 s window): all 4 lent again.
    resumed = decide(spec, observed, held.state, now=600.0)
    assert (resumed.targets["bulk"], resumed.decisions["bulk"].reason) == (4, R.BATCH_LENT)


def test_lent_replicas_yield_to_a_higher_priority_without_guarantee(endpoint, partition,
                                                                    signals):
    spec = partition(endpoint("chat", priority=1), endpoint("bulk", max_replicas=4), capacity=4)
    observed = {"chat": signals(running=30, ready=1), "bulk": _batch(300, running=30, ready=3)}
    state = PolicyState(endpoints={"chat": EndpointState(target=1, up_since=0.0),
                                   "bulk": EndpointState(target=3, batch_lent=3)})
    # chat's wish of 3 has lasted its 10 s window: it takes the lent replicas it needs.
    result = decide(spec, observed, state, now=10.0)
    assert result.decisions["chat"].target == 3
    assert (result.decisions["bulk"].target, result.decisions["bulk"].reason) == (
        1, R.BATCH_YIELDED)


def test_an_endpoints_own_returning_demand_takes_its_lent_replicas(endpoint, partition,
                                                                  signals):
    spec = partition(endpoint("chat", guaranteed_replicas=4, max_replicas=4), capacity=4)
    # 4 replicas, all lent to chat's batch backlog; its tenants come back: 35 -> 4 at once.
    observed = {"chat": _batch(200, running=10, ready=4, interactive=35, rate=7.0)}
    result = decide(spec, observed, _state(chat=(4, 4)), now=0.0)
    chat = result.decisions["chat"]
    # The same 4 replicas, now the tenant's: no replica restarts.
    assert (chat.target, chat.lent, chat.reason) == (4, 0, R.GUARANTEE)


@pytest.mark.parametrize("backlog", [0, None])
def test_no_backlog_no_lending(endpoint, partition, signals, backlog):
    spec = partition(endpoint("chat"), endpoint("bulk", max_replicas=4), capacity=4)
    observed = {"chat": signals(ready=0), "bulk": _batch(backlog, ready=0)}
    state = _state(chat=(0, 0), bulk=(0, 0))
    for now in (0.0, 10.0, 20.0):
        result = decide(spec, observed, state, now=now)
        state = result.state
        assert [d.target for d in result.decisions.values()] == [0, 0]
        assert "batch" not in result.decisions["bulk"].explanation


def test_a_backlog_not_observed_holds_what_is_lent(endpoint, partition):
    spec = partition(endpoint("bulk", max_replicas=4), capacity=4)
    result = decide(spec, {"bulk": _batch(None, ready=2)}, _state(bulk=(2, 2)), now=0.0)
    assert (result.decisions["bulk"].target, result.decisions["bulk"].lent) == (2, 2)
    assert "batch backlog not observed; holding 2 lent" in result.decisions["bulk"].explanation


def test_lending_stays_within_max_replicas_and_what_the_backlog_uses(endpoint, partition,
                                                                     signals):
    spec = partition(endpoint("chat", guaranteed_replicas=1), endpoint("bulk", max_replicas=3),
                     capacity=8)
    # chat: 5 ongoing + 15 lines -> ceil(20 / 10) = 2: 1 for its tenants, 1 lent
    # bulk: 1,000 lines -> 100, bounded by max_replicas 3
    observed = {"chat": _batch(15, ready=1, interactive=5, rate=1.0),
                "bulk": _batch(1000, ready=0)}
    state = PolicyState(endpoints={
        "chat": EndpointState(target=1, batch_up_since=0.0),
        "bulk": EndpointState(target=0, batch_up_since=0.0)})
    result = decide(spec, observed, state, now=10.0)
    assert (result.decisions["chat"].target, result.decisions["chat"].lent) == (2, 1)
    assert (result.decisions["bulk"].target, result.decisions["bulk"].lent) == (3, 3)


def test_lent_replicas_are_returned_when_the_backlog_is_done_and_held_while_it_drains(
        endpoint, partition):
    spec = partition(endpoint("bulk", max_replicas=4), capacity=4)
    # 15 lines left of a big batch: needs 2 of the 4 lent; a fewer wish waits 600 s.
    result = decide(spec, {"bulk": _batch(15, running=15, ready=4)}, _state(bulk=(4, 4)),
                    now=0.0)
    assert (result.decisions["bulk"].target, result.decisions["bulk"].reason) == (
        4, R.SCALE_DOWN_DELAYED)
    assert "lending 2 to batch waits for the 600s window" in result.decisions["bulk"].explanation
    drained = decide(spec, {"bulk": _batch(15, running=15, ready=4)}, result.state, now=600.0)
    assert (drained.decisions["bulk"].target, drained.decisions["bulk"].reason) == (
        2, R.BATCH_RETURNED)
    # The batch is done: every lent replica is given back at once.
    done = decide(spec, {"bulk": _batch(0, ready=2)}, drained.state, now=605.0)
    assert (done.decisions["bulk"].target, done.decisions["bulk"].reason) == (
        0, R.BATCH_RETURNED)
    assert done.state.endpoints["bulk"].batch_lent is None


def test_a_steady_backlog_does_not_flap(endpoint, partition, signals):
    spec = partition(endpoint("chat", guaranteed_replicas=2), endpoint("bulk", max_replicas=6),
                     capacity=6)
    state = _state(chat=(2, 0), bulk=(0, 0))
    targets = []
    for tick in range(60):  # 5 minutes, one decision every 5 s
        lent = state.endpoints["bulk"].batch_lent or 0
        observed = {"chat": signals(running=15, ready=2),
                    "bulk": _batch(400, running=min(400, 10 * lent), ready=lent)}
        result = decide(spec, observed, state, now=5.0 * tick)
        state = result.state
        targets.append(result.targets["bulk"])
        assert _allocated(result, spec) <= spec.capacity + CAPACITY_EPSILON
    # 1 at once, the other 3 of the 4 chat leaves after the 10 s window, then steady.
    assert targets[:3] == [1, 1, 4] and set(targets[3:]) == {4}


def test_a_state_saved_without_lending_decides_as_before(endpoint, partition, signals):
    spec = partition(endpoint("a"), endpoint("b"), capacity=4)
    observed = {"a": signals(running=25, ready=1), "b": signals(running=5, ready=1)}
    raw = {"version": 1, "decided_at": 0.0,
           "endpoints": {"a": {"target": 1, "up_since": 0.0}, "b": {"target": 1}}}
    result = decide(spec, observed, PolicyState.from_dict(raw), now=10.0)
    assert result.targets == {"a": 3, "b": 1}
    assert all(d.lent == 0 for d in result.decisions.values())


def test_replicas_a_scale_down_window_holds_are_lent_to_a_waiting_backlog(endpoint, partition,
                                                                          signals):
    """chat grew to 4 long ago and its load fell to 2 replicas' worth: its scale-down window
    holds the other 2 for ten minutes, which left the backlog waiting with the partition
    full. They are lent to it; when chat's demand returns they come back in one decision."""
    spec = partition(endpoint("chat"), endpoint("bulk", max_replicas=4), capacity=4)
    quiet = {"chat": signals(running=12, ready=4), "bulk": _batch(300, ready=0)}
    first = decide(spec, quiet, _state(chat=(4, 0), bulk=(0, 0)), now=0.0)
    chat, bulk = first.decisions["chat"], first.decisions["bulk"]
    # 12 ongoing at 80% of 10 per replica: 2 wished; the backlog's first replica at once.
    assert (bulk.target, bulk.lent, bulk.reason) == (1, 1, R.BATCH_LENT)
    assert (chat.target, chat.reason) == (3, R.RECLAIMED)
    assert "1 replica(s) standing down lent to batch backlogs" in chat.explanation
    second = decide(spec, quiet, first.state, now=10.0)
    assert (second.targets["chat"], second.targets["bulk"]) == (2, 2)  # its window's peak
    assert _allocated(second, spec) <= spec.capacity + CAPACITY_EPSILON
    back = {"chat": signals(running=38, ready=2), "bulk": _batch(280, running=20, ready=2)}
    third = decide(spec, back, second.state, now=20.0)
    fourth = decide(spec, back, third.state, now=30.0)  # its wish lasted the 10 s window
    assert (fourth.targets["chat"], fourth.targets["bulk"]) == (4, 0)
    assert fourth.decisions["bulk"].reason is R.BATCH_YIELDED


def test_replicas_granted_lately_are_not_lent_to_a_backlog(endpoint, partition, signals):
    """Shrinking chat within hold_after_growth_s of its growth would reverse it: a flap."""
    spec = partition(endpoint("chat"), endpoint("bulk", max_replicas=4), capacity=4)
    quiet = {"chat": signals(running=12, ready=4), "bulk": _batch(300, ready=0)}
    state = PolicyState(endpoints={"chat": EndpointState(target=4, grew_at=-100.0),
                                   "bulk": EndpointState(target=0)})
    result = decide(spec, quiet, state, now=0.0)
    assert (result.targets["chat"], result.targets["bulk"]) == (4, 0)
    assert result.decisions["bulk"].reason is R.CAPACITY
