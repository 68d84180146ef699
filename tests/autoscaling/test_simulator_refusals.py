"""The gateway's refusal of a standing queue in the simulator's engine model, as the live
gateway does it for an engine deployment (serving/targets/bound.py): full replicas whose
next request has waited past half its TTFT target refuse newcomers; a wake's held requests
beyond the gateway's turns wait in its line, which refuses newcomers once its first has
waited a quarter of the target; batch work is never refused. And what it changes for a
guaranteed tenant after a burst beyond its replicas."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from autoscaling.simulate.engine import PROFILES, FluidEngines
from autoscaling.simulate.run import PartitionController, run

PROFILE = PROFILES["h100-llama-8b"]  # TTFT target 1 s


def _engines(rate: float, replicas: int, steps: int, *, gateway_slots: float | None,
             timeout_s: float = 60.0) -> FluidEngines:
    """One endpoint, `rate` requests a second in steps of 0.1 s."""
    arrivals = np.full((steps, 1), rate * 0.1)
    cumulative = np.zeros((steps + 1, 1))
    np.cumsum(arrivals, axis=0, out=cumulative[1:])
    slots = None if gateway_slots is None else np.array([gateway_slots])
    return FluidEngines(PROFILE, np.array([512]), np.array([256]), np.array([1.0]),
                        np.array([0.05]), cumulative, np.array([replicas]), dt=0.1,
                        timeout_s=np.array([timeout_s]), gateway_slots=slots)


def _blocked(engines: FluidEngines) -> FluidEngines:
    """Every slot of the replica up taken by requests that never end."""
    engines.running[:] = PROFILE.max_num_seqs
    engines.output[:] = 1e12
    return engines


def test_full_replicas_refuse_newcomers_once_the_next_has_waited_half_the_target():
    engines = _blocked(_engines(10.0, replicas=1, steps=600, gateway_slots=4096))
    outcomes = [engines.step(step) for step in range(600)]
    refused = sum(float(o.refused[0]) for o in outcomes)
    # The first 0.5 s of arrivals (5-6 requests) queue; every one after is refused, none
    # of them waits for its client's timeout.
    assert 5.0 <= engines.waiting[0] <= 6.0
    assert refused == pytest.approx(10.0 * 60 - engines.waiting[0], abs=1.0)
    assert engines.abandoned[0] == 0
    assert float(engines.refused[0]) == refused
    # Accepted arrivals leave the FIFO; the queue's head is the oldest of the five.
    assert engines.cumulative[600, 0] == pytest.approx(600 - refused)


def test_without_a_gateway_nothing_is_refused_and_the_queue_waits_for_its_timeout():
    engines = _blocked(_engines(10.0, replicas=1, steps=900, gateway_slots=None))
    outcomes = [engines.step(step) for step in range(900)]
    assert sum(float(o.refused[0]) for o in outcomes) == 0
    assert engines.abandoned[0] == pytest.approx(10.0 * 30, abs=2)  # gone after 60 s
    assert engines.waiting[0] == pytest.approx(10.0 * 60, abs=2)


def test_batch_work_is_never_refused():
    engines = _blocked(_engines(10.0, replicas=1, steps=600, gateway_slots=4096,
                                timeout_s=np.inf))
    for step in range(600):
        assert engines.step(step).refused[0] == 0
    assert engines.waiting[0] == pytest.approx(600.0)


def test_a_wake_holds_what_its_turns_take_and_its_line_refuses_the_rest():
    # 20 turns at zero replicas, 10 requests/s, a replica starting (90 s): the first 20 are
    # held; the next wait in line, and once the first of them has waited 0.25 s (a quarter
    # of the 1 s target) newcomers are refused. The held ones are served after the start.
    engines = _engines(10.0, replicas=0, steps=1200, gateway_slots=20)
    engines.scale_to(np.array([1]), step=0)
    for step in range(900):
        engines.step(step)
    accepted = float(engines.cumulative[900, 0])
    assert 20 + 2 <= accepted <= 20 + 4  # held, plus the line's first 0.2-0.3 s
    assert float(engines.refused[0]) == pytest.approx(90 * 10 - accepted)
    # Ready at 90 s: the held and the line are served, and newcomers are accepted again.
    admitted = sum(float(engines.step(step).admitted[0]) for step in range(900, 1200))
    # (a few more while the held requests' prefills drain the line)
    assert float(engines.refused[0]) <= 90 * 10 - accepted + 10
    assert admitted == pytest.approx(float(engines.cumulative[1200, 0]), abs=2)
    assert engines.abandoned[0] == 0


def test_a_guaranteed_tenant_is_served_again_as_soon_as_its_burst_ends(tiny_world):
    """One guaranteed replica, a minute at 4x what it carries, then back within it. Queued,
    the burst's backlog leaves the next requests late for minutes; refused at the gateway,
    the minute after the burst is served within its SLO."""
    rate = PROFILE.replica_requests_per_s(512, 256)
    arrivals = np.zeros((900, 1), dtype=int)
    arrivals[:, 0] = np.random.default_rng(0).poisson(0.7 * rate, 900)
    arrivals[420:480, 0] = np.random.default_rng(1).poisson(4 * rate, 60)  # minute 7
    world = tiny_world(arrivals, capacity=1.0, guaranteed=(1,), initial=(1,))
    refusing = run(world, PartitionController(world.partition, world.initial_replicas))
    queueing_world = dataclasses.replace(world, gateway_refuses=False)
    queueing = run(queueing_world,
                   PartitionController(world.partition, world.initial_replicas))
    offered = float(arrivals[480:540, 0].sum())  # minute 8, right after the burst
    assert refusing.by_minute["good"][8, 0] >= 0.95 * offered
    assert queueing.by_minute["good"][8, 0] <= 0.05 * offered
    assert refusing.refused[0] > 0 and queueing.refused[0] == 0


def test_an_endpoint_at_twice_its_replicas_load_serves_what_they_carry_within_slo():
    """Two replicas, offered twice what they carry at their target concurrency, for five
    minutes. Refusing only a standing queue, the replicas admit until their batch and the
    newcomers' prefills stretch every step past the 50 ms ITL target: nothing is served
    within SLO. Refusing too while the last step's tokens came slower than 0.8 of the
    target (the live gateway's mean token gap), they serve about what they carry."""
    rate = PROFILE.replica_requests_per_s(512, 256)

    def within_slo_per_s(token_test: bool) -> tuple[float, float]:
        engines = _engines(2 * 2 * rate, replicas=2, steps=3000, gateway_slots=4096)
        if not token_test:
            engines.gateway.itl_budget_s[:] = np.inf
        outcomes = [engines.step(step) for step in range(3000)]
        settled = outcomes[1200:]  # after two minutes
        return (sum(float(o.good[0]) for o in settled) / 180,
                sum(float(o.refused[0]) for o in settled) / 180)

    good, refused = within_slo_per_s(token_test=True)
    assert good >= 0.9 * 2 * rate and refused >= 0.8 * 2 * rate
    good_without, _ = within_slo_per_s(token_test=False)
    assert good_without <= 0.05 * 2 * rate
