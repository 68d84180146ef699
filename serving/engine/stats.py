"""What one engine did since it was last asked: the load signals the partition autoscaler
reads, taken from vLLM's own scheduler and iteration statistics.

vLLM calls every stat logger once per engine step with its SchedulerStats (running, waiting,
KV-cache use) and IterationStats (time to first token and inter-token latencies of that
step). `EngineLoadRecorder` keeps them until `drain()` hands them over as one `EngineSample`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

# At most this many latency observations per sample; a busy engine makes thousands of
# inter-token latencies per second and a percentile needs far fewer.
MAX_LATENCIES_PER_SAMPLE = 2048


@dataclass(frozen=True, slots=True)
class EngineSample:
    """One replica's load over one reporting interval. running/waiting/kv_cache_usage are
    means over the engine steps of the interval (None when the engine made no step)."""

    steps: int
    running: float | None
    waiting: float | None
    kv_cache_usage: float | None
    ttft_s: tuple[float, ...] = ()
    itl_s: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "running": self.running, "waiting": self.waiting,
                "kv_cache_usage": self.kv_cache_usage, "ttft_s": list(self.ttft_s),
                "itl_s": list(self.itl_s)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EngineSample:
        return cls(int(raw["steps"]), raw.get("running"), raw.get("waiting"),
                   raw.get("kv_cache_usage"), tuple(raw.get("ttft_s", ())),
                   tuple(raw.get("itl_s", ())))


@dataclass
class _Totals:
    steps: int = 0
    running: float = 0.0
    waiting: float = 0.0
    kv_cache_usage: float = 0.0
    ttft_s: list[float] = field(default_factory=list)
    itl_s: list[float] = field(default_factory=list)


class EngineLoadRecorder:
    """Accumulates vLLM's per-step statistics between two `drain()` calls. Pass
    `stat_logger_factory` to AsyncLLM's `stat_loggers`. vLLM records from its output thread
    while drain() runs on the event loop, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = _Totals()

    def record(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        with self._lock:
            t = self._totals
            if scheduler_stats is not None:
                t.steps += 1
                t.running += scheduler_stats.num_running_reqs
                t.waiting += scheduler_stats.num_waiting_reqs
                t.kv_cache_usage += scheduler_stats.kv_cache_usage
            if iteration_stats is not None:
                room = MAX_LATENCIES_PER_SAMPLE - len(t.ttft_s)
                t.ttft_s.extend(iteration_stats.time_to_first_tokens_iter[:max(room, 0)])
                room = MAX_LATENCIES_PER_SAMPLE - len(t.itl_s)
                t.itl_s.extend(iteration_stats.inter_token_latencies_iter[:max(room, 0)])

    def drain(self) -> EngineSample:
        with self._lock:
            t, self._totals = self._totals, _Totals()
        if t.steps == 0:
            # vLLM steps whenever it has work, so no step means nothing running or waiting.
            return EngineSample(0, 0.0, 0.0, 0.0, tuple(t.ttft_s), tuple(t.itl_s))
        return EngineSample(t.steps, t.running / t.steps, t.waiting / t.steps,
                            t.kv_cache_usage / t.steps, tuple(t.ttft_s), tuple(t.itl_s))

    def stat_logger_factory(self):
        """A vLLM StatLoggerFactory whose loggers feed this recorder."""
        from vllm.v1.metrics.loggers import StatLoggerBase

        recorder = self

        class _LoadLogger(StatLoggerBase):
            def __init__(self, vllm_config, engine_index: int = 0) -> None:
                pass

            def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None,
                       engine_idx: int = 0) -> None:
                recorder.record(scheduler_stats, iteration_stats)

            def log_engine_initialized(self) -> None:
                pass

        return _LoadLogger
