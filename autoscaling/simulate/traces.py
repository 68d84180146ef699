"""Arrival-rate shapes of the scenarios: requests per second, per step and endpoint.

Each shape scales the endpoints' normal rates over time; arrival counts are then drawn as
Poisson around the rate (scenarios.build_world). The shapes:
- steady: constant rates.
- bursty: each rate redrawn every 10 s from a gamma distribution of shape 0.25, mean 1.
- diurnal: one sinusoidal cycle over the run, +-60%, tenants in three phase groups.
- burst: chosen endpoints run at a factor of their rate during set windows of the run.
On top of any shape, sporadic endpoints get their traffic in sessions (on ~5 min, off
~20 min, exponential; same mean rate), so they go idle between sessions.
"""

from __future__ import annotations

import math

import numpy as np

SPORADIC_ON_S, SPORADIC_OFF_S = 300.0, 1200.0  # sessions of the long tail
SPORADIC_DUTY = SPORADIC_ON_S / (SPORADIC_ON_S + SPORADIC_OFF_S)
SHAPES = ("steady", "bursty", "diurnal", "burst")


def on_off(steps: int, dt: float, rng: np.random.Generator) -> np.ndarray:
    """A 0/1 series: on for exponential spells of SPORADIC_ON_S, off for SPORADIC_OFF_S."""
    series = np.zeros(steps)
    t, on = 0.0, rng.random() < SPORADIC_DUTY
    end = steps * dt
    while t < end:
        spell = rng.exponential(SPORADIC_ON_S if on else SPORADIC_OFF_S)
        if on:
            series[int(t / dt): int(min(end, t + spell) / dt)] = 1.0
        t += spell
        on = not on
    return series


def rates(
    shape: str,
    base_rate: np.ndarray,
    sporadic: np.ndarray,
    steps: int,
    dt: float,
    rng: np.random.Generator,
    *,
    bursting: np.ndarray | None = None,
    burst_factor: float = 1.0,
    burst_windows: tuple[tuple[float, float], ...] = (),
) -> np.ndarray:
    """Arrival rate per step and endpoint, requests per second.

    For the burst shape, the bursting endpoints run at burst_factor times their rate during
    each (start, end) window, given as fractions of the run.
    """
    count = len(base_rate)
    if shape == "steady":
        series = np.broadcast_to(base_rate, (steps, count))
    elif shape == "bursty":
        slot = max(1, round(10.0 / dt))
        slots = math.ceil(steps / slot)
        gamma_shape = 0.25
        multiplier = rng.gamma(gamma_shape, 1.0 / gamma_shape, size=(slots, count))
        series = np.repeat(multiplier, slot, axis=0)[:steps] * base_rate
    elif shape == "diurnal":
        phase = (np.arange(count) % 3) * (2 * math.pi / 3)
        angle = 2 * math.pi * np.arange(steps)[:, None] / steps + phase
        series = base_rate * (1.0 + 0.6 * np.sin(angle))
    elif shape == "burst":
        series = np.array(np.broadcast_to(base_rate, (steps, count)))
        if bursting is not None:
            for start, end in burst_windows:
                window = slice(int(start * steps), int(end * steps))
                series[window, bursting] *= burst_factor
    else:
        raise ValueError(f"unknown trace shape {shape!r}; choose from {', '.join(SHAPES)}")
    if sporadic.any():
        series = np.array(series)
        for endpoint in np.flatnonzero(sporadic):
            series[:, endpoint] *= on_off(steps, dt, rng) / SPORADIC_DUTY
    return series
