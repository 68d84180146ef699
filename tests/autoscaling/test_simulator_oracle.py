"""The simulator's oracle: its service rate, its upper bound on hand-computable traces, and
its hindsight schedule beating every baseline and the policy where hindsight helps."""

from __future__ import annotations

import numpy as np
import pytest

from autoscaling.simulate.engine import PROFILES
from autoscaling.simulate.oracle import plan, slo_rate, upper_bound
from autoscaling.simulate.run import CONTROL_INTERVAL_S, run_all, scored_demand, warm_up_steps

H100 = PROFILES["h100-llama-8b"]


def test_slo_rate_is_where_inter_token_latency_meets_its_target():
    # itl = base / (1 - rate * (prompt / prefill + per_seq * output)) = 50 ms
    # => rate = (1 - base / 0.05) / (512 / 20,000 + per_seq * 256), about 14.9/s
    expected = (1 - H100.decode_step_base_s / 0.05) / (
        512 / H100.prefill_tokens_per_s + H100.decode_step_per_seq_s * 256)
    assert slo_rate(H100, 512, 256, 1.0, 0.05) == pytest.approx(expected, rel=1e-6)
    assert 14.5 < expected < 15.5


def test_slo_rate_without_latency_targets_is_bounded_by_the_batch():
    # Batch work: no useful latency target; the batch of max_num_seqs is what limits it.
    rate = slo_rate(H100, 512, 256, 86_400.0, 60.0)
    u = rate * 512 / H100.prefill_tokens_per_s
    itl = H100.decode_step_base_s / (1 - u - H100.decode_step_per_seq_s * rate * 256)
    assert rate * 256 * itl == pytest.approx(H100.max_num_seqs, rel=1e-4)


def test_upper_bound_fills_the_capacity_and_keeps_the_warm_replica(tiny_world):
    # Two accelerators; A is guaranteed 1 and asks 7/s, B asks 40/s: more than the two
    # replicas serve within SLO (~14.9/s each). A keeps its warm replica (min_replicas 1)
    # and is served in full; B gets the other accelerator: 14.9/s. Over the scored 540 s
    # of a 600 s run: (7 + 14.9) x 540 requests of 256 tokens.
    world = tiny_world(np.tile([7, 40], (600, 1)), capacity=2.0, guaranteed=(1, 0))
    rate = slo_rate(H100, 512, 256, 1.0, 0.05)
    bound = upper_bound(world, CONTROL_INTERVAL_S, warm_up_steps(world), scored_demand(world))
    assert warm_up_steps(world) == 60
    assert bound["good"][0] == pytest.approx(7 * 540)
    assert bound["good"][1] == pytest.approx(rate * 540, rel=1e-6)
    assert bound["tokens"] == pytest.approx((7 + rate) * 540 * 256, rel=1e-6)


def test_upper_bound_serves_the_guarantee_before_a_denser_tenant(tiny_world):
    # A (1,024-token prompts, 128 out) earns fewer tokens per replica-second than B (256,
    # 512 out), but A is guaranteed 2 replicas and asks 19/s, 19 / r_a = 1.49 of them: it
    # is served in full, and B gets the rest of three accelerators, (3 - 19 / r_a) x r_b.
    world = tiny_world(np.tile([19, 60], (600, 1)), capacity=3.0, guaranteed=(2, 0),
                       prompt=(1024, 256), output=(128, 512))
    r_a = slo_rate(H100, 1024, 128, 1.0, 0.05)
    r_b = slo_rate(H100, 256, 512, 1.0, 0.05)
    assert r_b * 512 > r_a * 128  # B is denser
    bound = upper_bound(world, CONTROL_INTERVAL_S, warm_up_steps(world), scored_demand(world))
    assert bound["good"][0] == pytest.approx(19 * 540)
    assert bound["good"][1] == pytest.approx((3 - 19 / r_a) * r_b * 540, rel=1e-6)


def test_plan_pre_warms_for_a_start_of_traffic_and_fits_the_capacity(tiny_world):
    # Idle for 300 s, then 10/s: one replica, held from at least a cold start (90 s) plus
    # one interval before the traffic, i.e. from tick 20 (200 s) on; the rate is smoothed
    # over a minute, so it may start 30 s sooner, not more.
    arrivals = np.zeros((600, 1), dtype=int)
    arrivals[300:] = 10
    world = tiny_world(arrivals, capacity=2.0, initial=(0,))
    targets = plan(world, CONTROL_INTERVAL_S, lent_sigmas=0.0)
    assert targets[:17, 0].max() == 0
    assert (targets[20:, 0] >= 1).all()
    assert (targets @ world.costs <= world.partition.capacity).all()


def _tokens(world, trajectory) -> float:
    return float(trajectory.good @ world.output_tokens)


def _start_of_traffic(tiny_world):
    arrivals = np.zeros((600, 2), dtype=int)
    arrivals[300:, 0] = 10  # A starts at 300 s: a cold start for whoever waits for it
    arrivals[:, 1] = 5  # B steady
    return tiny_world(arrivals, capacity=2.0, initial=(0, 1))


def _contested(tiny_world):
    # Three accelerators. A (guaranteed 1) steady at 7/s, C steady at 5/s (1 replica each);
    # B, denser (256 in, 512 out, ~11.1/s a replica), bursts to 20/s (2 replicas) in
    # 200-400 s: 4 replicas wanted of 3. The oracle keeps A, gives B its 2 and drops C.
    arrivals = np.zeros((600, 3), dtype=int)
    arrivals[:, 0] = 7
    arrivals[200:400, 1] = 20
    arrivals[:, 2] = 5
    return tiny_world(arrivals, capacity=3.0, guaranteed=(1, 0, 0), prompt=(512, 256, 512),
                      output=(256, 512, 256), initial=(1, 0, 1))


def _steady(tiny_world):
    return tiny_world(np.tile([6, 9], (600, 1)), capacity=3.0, guaranteed=(1, 0))


@pytest.mark.parametrize("build", [_start_of_traffic, _contested, _steady])
def test_oracle_is_at_least_every_baseline_and_the_policy(tiny_world, build):
    world = build(tiny_world)
    runs, bound = run_all(world)
    oracle = _tokens(world, runs["oracle"])
    for name, trajectory in runs.items():
        assert _tokens(world, trajectory) <= oracle * (1 + 1e-9), name
    assert oracle <= bound["tokens"] * (1 + 1e-9)
    assert runs["oracle"].capacity_violations == 0


def test_pre_warming_beats_waiting_for_a_cold_start(tiny_world):
    # From zero, every reactive controller loses the first ~90 s of A's traffic.
    world = _start_of_traffic(tiny_world)
    runs, _ = run_all(world)
    assert _tokens(world, runs["oracle"]) > 1.1 * _tokens(world, runs["partition"])
    assert runs["oracle"].lost["cold_start"][0] < 0.01 * 10 * 300
