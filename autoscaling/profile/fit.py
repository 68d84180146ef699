"""Pure arithmetic of a profile: medians of repeats, straight-line fits, cold-start phases.

Nothing here runs an engine or reads a file; autoscaling.profile.run feeds it the samples
and vLLM's log text.
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Cold-start phases in the order a start goes through them (the names of
# serving.engine.start_phases where the two agree), each the time from the end of the one
# before. Their sum is the cold start, launch to first token.
PHASES = ("process", "imports", "engine config", "engine process", "weights", "kv cache",
          "first token")

# vLLM's own log lines (0.32) that time the steps inside its engine process.
_LOG_SECONDS = {
    "model_init": re.compile(r"Initializing model took ([0-9.]+) seconds"),
    "weights_read": re.compile(r"Loading weights took ([0-9.]+) seconds"),
    "kv_cache": re.compile(r"init engine \(profile, create kv cache, warmup model\) took "
                           r"([0-9.]+) s"),
}
_LOG_KV_TOKENS = re.compile(r"KV cache size: ([0-9,]+) tokens")


@dataclass(frozen=True)
class LineFit:
    """y = intercept + slope * x, least squares over the medians; r2 says how straight."""

    intercept: float
    slope: float
    r2: float

    def __call__(self, x: float) -> float:
        return self.intercept + self.slope * x


def medians(samples: Mapping[int, Sequence[float]]) -> dict[int, float]:
    """x -> median of its repeats, in increasing x."""
    return {x: statistics.median(samples[x]) for x in sorted(samples) if samples[x]}


def fit_line(points: Mapping[int, float]) -> LineFit:
    """Least-squares line through (x, y), kept physical: a time never falls as x grows and is
    never negative at x = 0.

    Noise can tilt a nearly flat line below zero: then the slope is 0 and the intercept the
    median y. A negative intercept becomes 0 with the line through the origin
    (slope = sum(xy) / sum(xx)). E.g. {1: 5.4, 4: 6.2, 8: 7.3} ms gives 5.1 + 0.27 x ms.
    """
    if len(points) < 2:
        raise ValueError("a line needs at least two points")
    xs, ys = [float(x) for x in points], [float(y) for y in points.values()]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return LineFit(statistics.median(ys), 0.0, 1.0)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx
    intercept = mean_y - slope * mean_x
    if slope < 0:
        slope, intercept = 0.0, statistics.median(ys)
    elif intercept < 0:
        slope, intercept = sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs), 0.0
    return LineFit(intercept, slope, _r2(xs, ys, intercept, slope))


def _r2(xs: list[float], ys: list[float], intercept: float, slope: float) -> float:
    mean_y = statistics.fmean(ys)
    total = sum((y - mean_y) ** 2 for y in ys)
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    return 1.0 if total == 0 else max(0.0, 1.0 - residual / total)


def vllm_log_figures(text: str) -> dict[str, float]:
    """What vLLM's engine process logged about its own start: seconds per step, and the KV
    cache's size in tokens. A figure vLLM did not log is absent."""
    found: dict[str, float] = {}
    for name, pattern in _LOG_SECONDS.items():
        match = pattern.search(text)
        if match:
            found[name] = float(match.group(1))
    match = _LOG_KV_TOKENS.search(text)
    if match:
        found["kv_cache_tokens"] = float(match.group(1).replace(",", ""))
    return found


def cold_start_phases(launched: float, marks: Mapping[str, float],
                      log: Mapping[str, float]) -> dict[str, float]:
    """Seconds per phase (PHASES) from wall-clock marks and vLLM's logged durations.

    marks: the measuring process's clock at started (its first line), imported (vLLM
    imported), configured (engine config made), engine_ready (AsyncLLM built), first_token.
    Inside engine_ready - configured, vLLM's engine process logs how long the model took to
    build and load (weights) and the KV cache, memory profile and warm-up took (kv cache);
    the rest is starting its processes. Without those log lines the whole span counts as
    engine process and weights and kv cache are 0.
    E.g. launched 0, started 0.4, imported 22, configured 41, engine_ready 72.5,
    first_token 72.6, model_init 0.43 + weights_read 0.02, kv_cache 0.15:
    process 0.4, imports 21.6, engine config 19, engine process 30.9, weights 0.45,
    kv cache 0.15, first token 0.1.
    """
    order = ("started", "imported", "configured", "engine_ready", "first_token")
    missing = [name for name in order if name not in marks]
    if missing:
        raise ValueError(f"missing phase marks: {', '.join(missing)}")
    times = [launched] + [marks[name] for name in order]
    if any(later < earlier for earlier, later in itertools.pairwise(times)):
        raise ValueError(f"phase marks out of order: {dict(zip(('launched',) + order, times))}")
    engine_span = marks["engine_ready"] - marks["configured"]
    weights = log.get("model_init", 0.0) + log.get("weights_read", 0.0)
    kv_cache = log.get("kv_cache", 0.0)
    if weights + kv_cache > engine_span:  # logs from another run, or a clock gone wrong
        weights = kv_cache = 0.0
    return {
        "process": marks["started"] - launched,
        "imports": marks["imported"] - marks["started"],
        "engine config": marks["configured"] - marks["imported"],
        "engine process": engine_span - weights - kv_cache,
        "weights": weights,
        "kv cache": kv_cache,
        "first token": marks["first_token"] - marks["engine_ready"],
    }

