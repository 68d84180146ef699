"""The simulator's metrics on known inputs, the goodput sum's terms, and the suite's JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autoscaling.simulate.__main__ import main
from autoscaling.simulate.metrics import (
    attainment_where_fits,
    flap_counts,
    jain_fairness,
    loss_gap,
    policy_metrics,
)
from autoscaling.simulate.run import LOSS_TERMS, Trajectory, run, run_all
from autoscaling.simulate.suite import SUITE, TARGETS


@pytest.mark.parametrize(
    "shares, expected",
    [
        ([1.0, 1.0, 1.0, 1.0], 1.0),  # all equal
        ([1.0, 0.0, 0.0, 0.0], 0.25),  # one takes all: 1 / n
        ([1.0, 0.5], 0.9),  # 1.5^2 / (2 * 1.25) = 0.9
    ],
)
def test_jain_fairness(shares, expected):
    assert jain_fairness(np.array(shares)) == pytest.approx(expected)


def test_flaps_are_reversals_within_ten_minutes():
    times = np.array([10.0, 20.0, 30.0, 900.0, 2000.0])
    targets = np.array([[2], [1], [2], [3], [2]])  # initial 1: up, down, up, up, down
    # down at 20 (10 s after up), up at 30 (10 s after down): 2 flaps, both in 10 min;
    # up at 900 continues; down at 2000 is 1100 s after: not a flap
    assert flap_counts(times, targets, np.array([1])) == (2, 2)


def _trajectory(world, *, good, held_seconds, targets, by_minute=None, lost=None):
    count = len(world.names)
    arrivals = world.arrivals[60:].sum(axis=0).astype(float)
    return Trajectory(
        policy="hand", arrivals=arrivals, good=np.asarray(good, dtype=float),
        tick_times=np.arange(1, len(targets) + 1) * 10.0, targets=np.asarray(targets),
        held=np.asarray(targets, dtype=float), held_accelerator_seconds=held_seconds,
        scored_seconds=540.0, capacity_violations=0, wall_s=0.0,
        lost=lost or {term: np.zeros(count) for term in LOSS_TERMS}, by_minute=by_minute or {})


def test_goodput_per_partition_and_per_held_accelerator_hour_and_utilisation(tiny_world):
    # 2 accelerators, 540 s scored; 900 good requests of 256 tokens; 1 accelerator held
    # throughout: 230,400 tokens / (2 x 0.15 h) = 768,000; / (1 x 0.15 h) = 1,536,000;
    # utilisation 1 / 2.
    world = tiny_world(np.tile([2], (600, 1)), capacity=2.0)
    trajectory = _trajectory(world, good=[900], held_seconds=540.0, targets=[[1], [2], [1]])
    metrics = policy_metrics(world, trajectory)
    assert metrics["goodput_per_accel_hour"] == pytest.approx(768_000)
    assert metrics["goodput_per_held_accel_hour"] == pytest.approx(1_536_000)
    assert metrics["utilisation"] == pytest.approx(0.5)
    # up at 20 s, down at 30 s: one flap, over 1 endpoint and 540 / 600 of 10 minutes
    assert metrics["flaps"] == 1
    assert metrics["flaps_per_endpoint_per_10min"] == pytest.approx(1 / 0.9, abs=1e-4)
    assert metrics["slo_attainment"]["ep-0"] == pytest.approx(900 / 1080, abs=1e-4)


def test_guaranteed_attainment_counts_only_minutes_whose_load_fits(tiny_world):
    # Guaranteed 1 replica of ~11.7 requests/s at target concurrency: 700 a minute fit.
    # Minutes 1-6 bring 300 requests (fit), minutes 7-9 bring 1,200 (do not). Minute 0
    # is the warm-up. 290 of 300 good in each fitting minute: 1,740 / 1,800 = 0.9667, and
    # 10 a minute lost to capacity: 60 / 1,800.
    arrivals = np.zeros((600, 1), dtype=int)
    arrivals[:420] = 5
    arrivals[420:] = 20
    world = tiny_world(arrivals, capacity=2.0, guaranteed=(1,))
    by_minute = {key: np.zeros((10, 1)) for key in ("good", *LOSS_TERMS)}
    by_minute["good"][1:7] = 290
    by_minute["good"][7:] = 100  # the overloaded minutes do not count
    by_minute["capacity"][1:7] = 10
    trajectory = _trajectory(world, good=[2040], held_seconds=540.0, targets=[[1]],
                             by_minute=by_minute)
    fit = attainment_where_fits(world, trajectory)["ep-0"]
    assert fit["good"] == pytest.approx(1740 / 1800)
    assert fit["capacity"] == pytest.approx(60 / 1800)
    assert policy_metrics(world, trajectory)["guaranteed_fit_slo_attainment_min"] == (
        pytest.approx(0.9667, abs=1e-4))


def test_good_and_lost_terms_add_up_to_the_offered_requests(tiny_world):
    arrivals = np.zeros((600, 2), dtype=int)
    arrivals[:, 0] = 7
    arrivals[300:, 1] = 25  # starts cold and needs 2 replicas
    world = tiny_world(arrivals, capacity=2.0, guaranteed=(1, 0), initial=(1, 0))
    runs, _ = run_all(world)
    for trajectory in runs.values():
        accounted = trajectory.good + sum(trajectory.lost.values())
        assert accounted == pytest.approx(trajectory.arrivals, rel=0.01)
    partition = run(world, _first_controller(world))
    assert partition.lost["cold_start"][1] > 0  # B waited for a cold start


def _first_controller(world):
    from autoscaling.simulate.run import controllers

    return controllers(world)[0]


def test_the_loss_gap_sums_to_the_goodput_difference(tiny_world):
    arrivals = np.zeros((600, 2), dtype=int)
    arrivals[:, 0] = 7
    arrivals[300:, 1] = 25
    world = tiny_world(arrivals, capacity=2.0, guaranteed=(1, 0), initial=(1, 0))
    runs, _ = run_all(world)
    # Static holds B's replica from the start and loses no cold start, but refuses more.
    mine, theirs = (policy_metrics(world, runs[name]) for name in ("partition", "static"))
    gap = loss_gap(mine, theirs)
    difference = theirs["goodput_per_accel_hour"] - mine["goodput_per_accel_hour"]
    assert abs(difference) > 1_000
    assert sum(gap.values()) == pytest.approx(difference, rel=0.02)
    assert list(gap.values()) == sorted(gap.values(), reverse=True)


# --- the suite's JSON --------------------------------------------------------------------

METRICS = {
    "goodput_per_accel_hour", "goodput_per_held_accel_hour", "lost_per_accel_hour",
    "utilisation", "jain_fairness", "flaps_per_endpoint_per_10min",
    "max_flaps_per_endpoint_10min", "guaranteed_slo_attainment_min",
    "guaranteed_fit_slo_attainment_min", "cold_start_misses", "capacity_violations",
}


def test_the_suite_reports_every_scenario_and_seed_with_every_metric(capsys):
    assert main(["--suite", "--json", "--hours", "0.02", "--workers", "2"]) == 0
    suite = json.loads(capsys.readouterr().out)
    cells = {(r["scenario"], r["seed"]) for r in suite["runs"]}
    assert cells == {(scenario, seed) for scenario in SUITE for seed in range(10)}
    for result in suite["runs"]:
        assert set(result["policies"]) == {"partition", "ray-fixed-max", "ray-shared",
                                           "static", "oracle"}
        for metrics in result["policies"].values():
            assert METRICS <= set(metrics)
        assert set(result["targets"]) == set(TARGETS)
        for check in result["targets"].values():
            assert check["met"] in (True, False, None)
        assert result["best_baseline"] in ("ray-fixed-max", "ray-shared", "static")
        assert "upper_bound" in result["oracle"]
    assert set(suite["summary"]) == set(SUITE)
    for summary in suite["summary"].values():
        assert set(summary["targets_met"]) == set(TARGETS)
        assert summary["seeds"] == list(range(10))


def test_the_suite_reads_as_a_table(capsys):
    assert main(["--suite", "--seeds", "0,1", "--hours", "0.02", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    for scenario in SUITE:
        assert f"{scenario}:" in out
    assert "targets met:" in out and "best baseline" in out
