"""Properties of decide() over random partitions, signals and histories, and state round trips.

Whatever the signals (including missing ones) and whatever the state carried in:
- the targets never cost more than the partition's capacity;
- every endpoint with demand gets at least min(desired, guaranteed);
- targets stay within [min_replicas, max_replicas], and replicas lent to batch within them;
- batch lending (any backlog, lent or not) changes none of the above;
- the state survives a JSON round trip and decides the same afterwards.
"""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaling import (
    EndpointSignals,
    EndpointSpec,
    PartitionSpec,
    PolicyState,
    PolicyTuning,
    SloTargets,
    decide,
)
from autoscaling.spec import CAPACITY_EPSILON

SLO = SloTargets(ttft_p95_s=1.0, itl_p95_s=0.05)
COSTS = (0.25, 0.5, 1.0, 2.0)


@st.composite
def partitions(draw: st.DrawFn) -> PartitionSpec:
    capacity = draw(st.sampled_from((1.0, 2.0, 4.0, 8.0, 16.0)))
    count = draw(st.integers(1, 6))
    endpoints = []
    budget = capacity
    for i in range(count):
        cost = draw(st.sampled_from([c for c in COSTS if c <= capacity]))
        max_replicas = draw(st.integers(1, 12))
        affordable = int((budget + CAPACITY_EPSILON) // cost)
        guaranteed = draw(st.integers(0, min(max_replicas, affordable)))
        budget -= guaranteed * cost
        endpoints.append(EndpointSpec(
            name=f"e{i}",
            replica_cost=cost,
            min_replicas=draw(st.integers(0, guaranteed)),
            max_replicas=max_replicas,
            guaranteed_replicas=guaranteed,
            priority=draw(st.integers(0, 2)),
            slo=SLO,
            target_ongoing_per_replica=draw(st.sampled_from((1.0, 4.0, 16.0))),
            idle_to_zero_s=draw(st.sampled_from((None, 30.0, 600.0))),
        ))
    tuning = PolicyTuning(upscale_window_s=draw(st.sampled_from((0.0, 10.0, 30.0))),
                          downscale_window_s=draw(st.sampled_from((0.0, 60.0, 300.0))))
    return PartitionSpec(capacity=capacity, endpoints=endpoints, tuning=tuning)


maybe_load = st.one_of(st.none(), st.floats(0, 200, allow_nan=False))
maybe_latency = st.one_of(st.none(), st.floats(0, 5, allow_nan=False))

signals_of_one = st.one_of(
    st.none(),
    st.builds(
        EndpointSignals,
        ready_replicas=st.one_of(st.none(), st.integers(0, 12)),
        arrival_rate_rps=st.one_of(st.none(), st.floats(0, 100, allow_nan=False)),
        waiting=maybe_load,
        running=maybe_load,
        kv_cache_usage=st.one_of(st.none(), st.floats(0, 1)),
        ttft_p95_s=maybe_latency,
        itl_p95_s=maybe_latency,
        batch_backlog=st.one_of(st.none(), st.integers(0, 500)),
        batch_running=st.one_of(st.none(), st.integers(0, 100)),
    ),
)


def _has_demand(observed: EndpointSignals | None) -> bool:
    """Interactive demand: load beyond the batch lines in the engines."""
    if observed is None or observed.ongoing is None:
        return False
    interactive = observed.ongoing - (observed.batch_running or 0)
    return interactive > 0 or (interactive == observed.ongoing
                               and (observed.arrival_rate_rps or 0) > 0)


@settings(max_examples=150, deadline=None)
@given(partition=partitions(), data=st.data())
def test_no_decision_exceeds_capacity_or_breaks_a_guarantee(partition, data):
    names = [spec.name for spec in partition.endpoints]
    state: PolicyState | None = None
    now = 0.0
    for _ in range(data.draw(st.integers(1, 6), label="ticks")):
        now += data.draw(st.sampled_from((1.0, 10.0, 100.0, 700.0)), label="step")
        observed = {name: data.draw(signals_of_one, label=name) for name in names}
        result = decide(partition, observed, state, now)

        allocated = sum(result.decisions[spec.name].target * spec.replica_cost
                        for spec in partition.endpoints)
        assert allocated <= partition.capacity + CAPACITY_EPSILON
        assert abs(allocated - result.allocated) < 1e-6
        for spec in partition.endpoints:
            decision = result.decisions[spec.name]
            assert spec.min_replicas <= decision.target <= spec.max_replicas
            assert 0 <= decision.lent <= decision.target
            if _has_demand(observed[spec.name]):
                owed = min(decision.desired, spec.guaranteed_replicas, spec.max_replicas)
                assert decision.target >= owed, decision.explanation
            assert decision.explanation
        state = result.state


@settings(max_examples=100, deadline=None)
@given(partition=partitions(), data=st.data())
def test_batch_is_the_lowest_tier(partition, data):
    """Whatever is lent to batch backlogs, every endpoint's interactive share is what it
    would be with no backlog anywhere, less the replicas it holds only standing down
    (lending.standing_down), never into its guarantee: lending takes only what interactive
    claims leave, and replicas that only a scale-down window holds."""
    names = [spec.name for spec in partition.endpoints]
    state: PolicyState | None = None
    now = 0.0
    for _ in range(data.draw(st.integers(1, 5), label="ticks")):
        now += data.draw(st.sampled_from((1.0, 10.0, 100.0, 700.0)), label="step")
        observed = {name: data.draw(signals_of_one, label=name) for name in names}
        without = {name: None if s is None else dataclasses.replace(s, batch_backlog=0)
                   for name, s in observed.items()}
        result = decide(partition, observed, state, now)
        alone = decide(partition, without, state, now)
        # Without a backlog nothing is lent; unobserved, what was lent is held.
        assert all(d.lent == 0 for name, d in alone.decisions.items() if without[name])
        for spec in partition.endpoints:
            decision, other = result.decisions[spec.name], alone.decisions[spec.name]
            interactive = decision.target - decision.lent
            standing_down = _standing_down_lent(decision)
            assert interactive + standing_down == other.target - other.lent, (
                decision.explanation)
            if standing_down:
                assert interactive >= spec.guaranteed_replicas, decision.explanation
        state = result.state


def _standing_down_lent(decision) -> int:
    """Replicas of decision's endpoint lent to batch backlogs while standing down, by its
    notes."""
    return sum(args[0] for text, args in decision.notes if "standing down lent" in text)


@settings(max_examples=60, deadline=None)
@given(partition=partitions(), data=st.data())
def test_state_round_trips_through_json_and_decides_the_same(partition, data):
    names = [spec.name for spec in partition.endpoints]
    state: PolicyState | None = None
    now = 0.0
    for _ in range(3):
        now += 20.0
        observed = {name: data.draw(signals_of_one, label=name) for name in names}
        state = decide(partition, observed, state, now).state

    restored = PolicyState.from_dict(json.loads(json.dumps(state.to_dict(), allow_nan=False)))
    assert restored == state

    observed = {name: data.draw(signals_of_one, label=name) for name in names}
    before = decide(partition, observed, state, now + 20.0)
    after = decide(partition, observed, restored, now + 20.0)
    assert before.targets == after.targets
    assert before.state == after.state


def test_state_format_is_versioned():
    raw = PolicyState().to_dict()
    assert raw == {"version": 1, "decided_at": None, "endpoints": {}}
    raw["version"] = 99
    try:
        PolicyState.from_dict(raw)
    except ValueError as error:
        assert "99" in str(error)
    else:  # pragma: no cover - the assertion above is the test
        raise AssertionError("an unknown state format must be refused")
