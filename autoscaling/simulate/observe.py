"""What the simulated controllers see: engine gauges and latency percentiles over windows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autoscaling.simulate.engine import FluidEngines, StepOutcome

LATENCY_WINDOW_S = 30.0  # TTFT/ITL percentiles and arrival rate
LOOK_BACK_PERIOD_S = 30.0  # Ray Serve's default averaging of ongoing requests


@dataclass(frozen=True)
class ObservedSignals:
    """Per-endpoint arrays sampled at a control tick; NaN latency means none observed."""

    ready: np.ndarray
    running: np.ndarray  # mean over the last control interval
    waiting: np.ndarray
    arrival_rate: np.ndarray
    kv_cache_usage: np.ndarray
    ttft_p95: np.ndarray
    itl_p95: np.ndarray
    ongoing_look_back: np.ndarray  # mean running + waiting over Ray's look-back period
    held: np.ndarray  # replicas holding accelerators (ready or starting), after any failure


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> np.ndarray:
    """Column-wise weighted percentile (q in [0, 1]); NaN where a column has no weight."""
    order = np.argsort(values, axis=0)
    sorted_values = np.take_along_axis(values, order, axis=0)
    cumulative = np.cumsum(np.take_along_axis(weights, order, axis=0), axis=0)
    total = cumulative[-1]
    index = np.argmax(cumulative >= q * total, axis=0)
    result = sorted_values[index, np.arange(values.shape[1])]
    return np.where(total > 0, result, np.nan)


class SignalRecorder:
    """Rolling windows of the engines' per-step outcomes, one row per step.

    By default the load (running, waiting) is averaged over the control interval and the
    latencies and arrival rate over LATENCY_WINDOW_S. `window_s` puts all of them over one
    window instead, as the live controller's SignalWindow (autoscaler.window_s) does."""

    def __init__(self, endpoints: int, dt: float, control_interval_s: float,
                 window_s: float | None = None) -> None:
        self.dt = dt
        self.latency_steps = max(1, round((window_s or LATENCY_WINDOW_S) / dt))
        self.look_back_steps = max(1, round(LOOK_BACK_PERIOD_S / dt))
        self.control_steps = max(1, round(control_interval_s / dt))
        self.load_steps = (self.control_steps if window_s is None
                           else max(1, round(window_s / dt)))
        rows = max(self.latency_steps, self.look_back_steps, self.control_steps,
                   self.load_steps)
        self.rows = rows
        self.running = np.zeros((rows, endpoints))
        self.waiting = np.zeros((rows, endpoints))
        self.admitted = np.zeros((rows, endpoints))
        self.ttft = np.zeros((rows, endpoints))
        self.itl = np.zeros((rows, endpoints))
        self.recorded = 0

    def record(self, engines: FluidEngines, outcome: StepOutcome) -> None:
        row = self.recorded % self.rows
        self.running[row] = engines.mean_running
        self.waiting[row] = engines.waiting
        self.admitted[row] = outcome.admitted
        self.ttft[row] = outcome.ttft_worst_s
        self.itl[row] = outcome.itl_s
        self.recorded += 1

    def _last(self, table: np.ndarray, steps: int) -> np.ndarray:
        steps = max(1, min(steps, self.recorded))
        rows = (self.recorded - 1 - np.arange(steps)) % self.rows
        return table[rows]

    def observe(self, engines: FluidEngines, step: int) -> ObservedSignals:
        ready = engines.ready.copy()
        held = engines.held.copy()
        if self.recorded == 0:
            zeros = np.zeros_like(engines.running)
            nan = np.full_like(zeros, np.nan)
            return ObservedSignals(ready, zeros, zeros, zeros, zeros, nan, nan, zeros, held)
        running = self._last(self.running, self.load_steps).mean(axis=0)
        waiting = self._last(self.waiting, self.load_steps).mean(axis=0)
        look_back = (self._last(self.running, self.look_back_steps)
                     + self._last(self.waiting, self.look_back_steps)).mean(axis=0)
        window = min(self.latency_steps, step)
        cumulative = engines.cumulative
        arrivals = cumulative[step] - cumulative[max(0, step - window)]
        arrival_rate = arrivals / max(window * self.dt, self.dt)
        admitted = self._last(self.admitted, self.latency_steps)
        ttft_p95 = weighted_percentile(self._last(self.ttft, self.latency_steps), admitted, 0.95)
        decoding = self._last(self.running, self.latency_steps)
        itl_p95 = weighted_percentile(self._last(self.itl, self.latency_steps), decoding, 0.95)
        seats = np.maximum(ready * engines.profile.max_num_seqs, 1)
        kv_cache_usage = np.minimum(engines.mean_running / seats, 1.0)
        return ObservedSignals(ready, running, waiting, arrival_rate, kv_cache_usage,
                               ttft_p95, itl_p95, look_back, held)
