"""The simulator-vs-live check's pure part (autoscaling.simulate.live_check): the trace, the
simulated world of the live test's partition, per-request TTFTs out of the fluid engines,
and the figures compared."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from autoscaling.simulate import live_check
from autoscaling.simulate.engine import PROFILES, FluidEngines
from autoscaling.simulate.observe import SignalRecorder
from deployments.config import load_config

LIVE_CONFIG = Path(__file__).parents[1] / "e2e_autoscaling" / "platform.yaml"
PHASES = live_check.DEFAULT_PHASES
SECONDS = sum(p.seconds for p in PHASES)


@pytest.fixture(scope="module")
def live_config():
    return load_config(LIVE_CONFIG)


def _served_like(cold_start_s: float = 30.0):
    """A CPU profile as slow as the served path is (tens of ms a token at a batch of 4)."""
    return dataclasses.replace(PROFILES["cpu-tiny-llama"], decode_step_base_s=0.012,
                               decode_step_per_seq_s=0.002, cold_start_s=cold_start_s)


def _world(live_config, rate: float, profile=None, seed: int = 0):
    times = live_check.arrival_times(PHASES, rate, seed)
    world = live_check.live_world(live_config.autoscaled_partition(), profile or _served_like(),
                                  times, SECONDS, initial={"burst": 1, "quiet": 0},
                                  prompt_tokens=8, output_tokens=100)
    return world, times


def test_the_trace_is_seeded_and_puts_each_load_in_its_phase():
    one = live_check.arrival_times(PHASES, 2.0, seed=3)
    assert one == live_check.arrival_times(PHASES, 2.0, seed=3)
    assert one != live_check.arrival_times(PHASES, 2.0, seed=4)
    starts = dict(zip((p.name for p in PHASES), live_check.phase_starts(PHASES)))
    quiet_from, idle_from = starts["quiet returns"], starts["idle"]
    assert all(quiet_from <= t < idle_from for t in one["quiet"])
    assert all(t < idle_from for t in one["burst"])
    for endpoint, times in one.items():
        assert times == sorted(times)
        expected = sum(p.seconds * p.load.get(endpoint, 0) * 2.0 for p in PHASES)
        assert abs(len(times) - expected) < 5 * expected ** 0.5, (endpoint, len(times))


def test_binned_arrivals_count_every_request_in_its_step():
    counts = live_check.binned({"b": [0.05, 0.15, 0.19, 9.99], "a": [1.0]}, ["a", "b"],
                               dt=0.1, steps=50)
    assert counts.sum(axis=0).tolist() == [1, 4]
    assert counts[10, 0] == 1 and counts[0, 1] == 1 and counts[1, 1] == 2
    assert counts[49, 1] == 1  # past the end: the last step


def test_the_world_is_the_live_partition_with_its_arrivals(live_config):
    world, times = _world(live_config, rate=2.0)
    assert world.names == ["burst", "quiet"]
    assert world.partition.capacity == 2
    assert world.partition.tuning.upscale_window_s == 2
    assert world.initial_replicas.tolist() == [1, 0]
    assert world.arrivals.sum(axis=0).tolist() == [len(times["burst"]), len(times["quiet"])]
    assert np.all(world.timeout_s == 900.0)


def test_the_simulated_trace_borrows_gives_back_and_wakes(live_config):
    """On the live test's partition with the live controller's period and window, the
    simulated policy does what the live test asserts: `burst` grows to two on `quiet`'s idle
    slot, gives it back when `quiet`'s requests come (held, then served after a cold start),
    and `quiet` idles to zero once the load stops."""
    profile = _served_like(cold_start_s=30.0)
    world, times = _world(live_config, rate=2.0, profile=profile)
    scaler = live_config.partition.autoscaler
    observed = live_check.simulate(world, PHASES, period_s=scaler.period_s,
                                   window_s=scaler.window_s)
    figures = live_check.figures(observed, PHASES)
    burst_began = live_check.phase_starts(PHASES)[1]
    assert burst_began <= figures["burst asked for a 2nd replica, from the start (s)"] \
        < burst_began + 15.0
    assert figures["burst 2nd replica start, asked to ready (s)"] == pytest.approx(30.0, abs=1)
    assert figures["quiet asked for a replica, after 'quiet returns' began (s)"] < 5.0
    assert figures["quiet replica start, asked to ready (s)"] == pytest.approx(30.0, abs=1)
    assert figures["burst back to 1, after 'quiet returns' began (s)"] < 5.0
    assert 15.0 <= figures["quiet back at zero, after it was idle and ready (s)"] < 30.0
    # Every request was served or refused, each counted once (a simulated one may be
    # split in parts); quiet's few held ones fit its turns and none was refused.
    for endpoint in ("burst", "quiet"):
        weight = sum(w for pairs in observed.ttft[endpoint].values() for _, w in pairs)
        refused = observed.refused.get(endpoint, 0.0)
        assert weight + refused == pytest.approx(len(times[endpoint]), abs=0.5)
        assert figures[f"{endpoint} requests refused (503)"] == refused
    assert observed.refused.get("quiet", 0.0) == 0
    # quiet's first requests waited for its cold start; burst at one light replica did not.
    assert figures["quiet TTFT p95, quiet returns (s)"] >= 0.5 * profile.cold_start_s
    assert figures["burst TTFT p95, one replica (s)"] < 1.0
    assert max(r["burst"] + r["quiet"] for _, r in observed.ready) <= 2


def test_ttfts_are_spread_over_arrival_steps_fifo():
    """Three requests arrive in step 0 and two in step 2 at an endpoint with no replica; one
    replica is ready at step 5 (cold start 0.5 s): all five are admitted then, their TTFTs
    the queueing since their own step plus the step's service."""
    profile = dataclasses.replace(PROFILES["cpu-tiny-llama"], cold_start_s=0.5)
    arrivals = np.zeros((10, 1), dtype=np.int64)
    arrivals[0, 0], arrivals[2, 0] = 3, 2
    cumulative = np.zeros((11, 1), dtype=np.int64)
    np.cumsum(arrivals, axis=0, out=cumulative[1:])
    engines = FluidEngines(profile, np.array([8]), np.array([16]), np.array([60.0]),
                           np.array([1.0]), cumulative, np.array([0]), dt=0.1,
                           timeout_s=np.array([900.0]))
    phases = (live_check.Phase("all", 1.0, {"a": 1.0}),)
    observed = live_check.Observed()
    recorder = live_check.TtftRecorder(["a"], phases, observed, dt=0.1, sample_every_s=0.1)
    engines.scale_to(np.array([1]), 0)
    for step in range(10):
        outcome = engines.step(step)
        recorder(step, engines, outcome)
        if outcome.admitted[0] > 0:
            service = float(outcome.service_s[0])
            admitted_at = step
    pairs = sorted(observed.ttft["a"]["all"])
    assert sum(w for _, w in pairs) == pytest.approx(5.0)
    assert admitted_at == 5
    assert pairs[0] == pytest.approx((0.3 + service, 2.0))
    assert pairs[-1] == pytest.approx((0.5 + service, 3.0))
    assert [r["a"] for _, r in observed.ready] == [0] * 5 + [1] * 5
    assert [r["a"] for _, r in observed.asked] == [1] * 10


def test_figures_of_a_run():
    observed = live_check.Observed()
    # burst asked for 2 at 20 s, ready at 50 s, back to 1 at 180 s; quiet asked at 165 s,
    # ready from 200 s to 260 s (asked until 255 s).
    for t in range(340):  # the phases' 340 s
        burst = 2 if 50 <= t < 180 else 1
        quiet = 1 if 200 <= t < 260 else 0
        observed.ready.append((float(t), {"burst": burst, "quiet": quiet}))
        observed.asked.append((float(t), {"burst": 2 if 20 <= t < 180 else 1,
                                          "quiet": 1 if 165 <= t < 255 else 0}))
    for value in range(1, 21):
        observed.add_ttft("burst", "burst", value / 10)
    got = live_check.figures(observed, PHASES)
    assert got["burst asked for a 2nd replica, from the start (s)"] == 20.0
    assert got["burst 2nd replica start, asked to ready (s)"] == 30.0
    assert got["quiet asked for a replica, after 'quiet returns' began (s)"] == 5.0
    assert got["quiet replica start, asked to ready (s)"] == 35.0
    assert got["burst back to 1, after 'quiet returns' began (s)"] == 20.0
    # idle began at 250 s, quiet was ready from 200 s: back at zero 10 s after idle began.
    assert got["quiet back at zero, after it was idle and ready (s)"] == 10.0
    assert got["burst replica-seconds ready"] == 340 + 130
    assert got["quiet replica-seconds ready"] == 60
    assert got["burst TTFT p95, burst (s)"] == pytest.approx(1.9)
    assert "burst TTFT p95, one replica (s)" not in got  # no request: no figure


def test_weighted_p95_and_the_tolerance():
    assert live_check.weighted_p95([]) is None
    assert live_check.weighted_p95([(float(v), 1.0) for v in range(1, 101)]) == 95.0
    # Weight moves the percentile: a heavy slow part is most of the distribution.
    assert live_check.weighted_p95([(0.1, 1.0), (5.0, 0.5), (9.0, 0.01)]) == 5.0
    assert live_check.Row("x", live=2.0, simulated=2.5).within
    assert not live_check.Row("x", live=2.0, simulated=2.6).within
    assert not live_check.Row("x", live=None, simulated=1.0).within
    assert live_check.Row("x", live=2.0, simulated=1.0).ratio == 0.5


def test_a_window_averages_load_over_it_not_over_the_control_interval():
    """With window_s (the live controller's SignalWindow), the load signal is the mean over
    the whole window; by default, over the last control interval."""
    profile = PROFILES["cpu-tiny-llama"]
    cumulative = np.zeros((11, 1), dtype=np.int64)
    engines = FluidEngines(profile, np.array([8]), np.array([16]), np.array([1.0]),
                           np.array([1.0]), cumulative, np.array([1]), dt=1.0)
    outcome = engines.step(0)
    windowed = SignalRecorder(1, dt=1.0, control_interval_s=1.0, window_s=5.0)
    default = SignalRecorder(1, dt=1.0, control_interval_s=1.0)
    for running in (10.0, 0.0, 0.0, 0.0, 0.0):
        engines.mean_running = np.array([running])
        windowed.record(engines, outcome)
        default.record(engines, outcome)
    assert windowed.observe(engines, 5).running.tolist() == [2.0]
    assert default.observe(engines, 5).running.tolist() == [0.0]


def test_a_first_token_cost_per_running_request_lengthens_ttft_with_the_batch():
    """A profile fitted through a gateway adds its per-running-request first-token cost to
    each request's service; the built-in profiles (0) are unchanged by it."""
    arrivals = np.zeros((4, 1), dtype=np.int64)
    arrivals[:, 0] = 8
    cumulative = np.zeros((5, 1), dtype=np.int64)
    np.cumsum(arrivals, axis=0, out=cumulative[1:])

    def services(profile):
        engines = FluidEngines(profile, np.array([8]), np.array([400]), np.array([60.0]),
                               np.array([1.0]), cumulative, np.array([1]), dt=0.1)
        steps = [engines.step(step) for step in range(4)]
        return [float(o.service_s[0]) for o in steps], float(engines.mean_running[0])

    base = PROFILES["cpu-tiny-llama"]
    plain, _ = services(base)
    costly, batch = services(dataclasses.replace(base, first_token_per_running_s=0.002))
    assert batch > 8  # requests pile up: the later steps have a batch to wait behind
    assert costly[0] > plain[0]
    assert costly[-1] - plain[-1] == pytest.approx(0.002 * batch, rel=0.5)
    assert costly[-1] - plain[-1] > costly[0] - plain[0]


def test_on_a_shared_host_a_start_beside_load_is_slower_and_slows_the_serving_replicas():
    """Two endpoints on one host: `serving` runs requests on its replica, `woken` starts one.
    With the shared-host figures the start takes cold_start_beside_load_s, and `serving`'s
    steps take step_slowdown_while_starting times as long until it is up; a start with
    nothing serving takes cold_start_s; the built-in profiles (independent) are unchanged."""
    steps = 60
    arrivals = np.zeros((steps, 2), dtype=np.int64)
    arrivals[:, 0] = 1  # serving: a request a step
    cumulative = np.zeros((steps + 1, 2), dtype=np.int64)
    np.cumsum(arrivals, axis=0, out=cumulative[1:])
    base = dataclasses.replace(PROFILES["cpu-tiny-llama"], cold_start_s=1.0)
    shared = dataclasses.replace(base, cold_start_beside_load_s=3.0,
                                 step_slowdown_while_starting=2.0)

    def run(profile, start_at: int):
        engines = FluidEngines(profile, np.array([8, 8]), np.array([400, 400]),
                               np.array([60.0, 60.0]), np.array([1.0, 1.0]), cumulative,
                               np.array([1, 0]), dt=0.1)
        ready_at, itl = None, []
        for step in range(steps):
            if step == start_at:
                engines.scale_to(np.array([1, 1]), step)
            itl.append(float(engines.step(step).itl_s[0]))
            if ready_at is None and engines.ready[1] == 1:
                ready_at = step
        return ready_at, itl

    ready_at, itl = run(shared, start_at=10)
    assert ready_at == 10 + 30  # 3 s beside load, at 0.1 s a step
    ready_at, plain = run(base, start_at=10)
    assert ready_at == 10 + 10  # independent accelerators: cold_start_s
    # Twice as slow from the step the start began (the batch is the same there) to the
    # step it was ready (a step later, the same batch runs at full speed again).
    assert itl[9] == pytest.approx(plain[9])
    assert itl[10] == pytest.approx(2.0 * plain[10], rel=0.05)
    assert itl[39] / itl[41] == pytest.approx(2.0, rel=0.05)
    assert plain[19] / plain[21] == pytest.approx(1.0, rel=0.05)
    # Nothing serving yet (before the first arrival is running): the start is cold_start_s.
    quiet = np.zeros_like(cumulative)
    engines = FluidEngines(shared, np.array([8, 8]), np.array([400, 400]),
                           np.array([60.0, 60.0]), np.array([1.0, 1.0]), quiet,
                           np.array([1, 0]), dt=0.1)
    engines.scale_to(np.array([1, 1]), 0)
    for step in range(11):
        engines.step(step)
    assert engines.ready.tolist() == [1, 1]
