"""The platform's metric catalog: every metric defined once, with its labels and buckets.

Metrics are recorded with `ray.util.metrics`, so every Ray process of the platform reports to
its node's Ray metrics agent and one Prometheus scrape target set (Ray's service-discovery
file) sees them all. Ray prefixes each exposed name with `ray_` and exports counters with
`_total`: `aifactory_requests` is queried as `ray_aifactory_requests_total`.

Outside a Ray process (unit tests, tools) recording does nothing; the metric objects are made
on first use, so importing this module costs nothing and needs no Ray. Labels are a small fixed
set (tenant, endpoint, model, and an outcome where it applies), never a key, request or user id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

logger = logging.getLogger(__name__)

# Every exposed name starts with this: Ray's prefix, then the platform's.
RAY_PREFIX = "ray_"

# Seconds. LLM latencies run from milliseconds (a cached short prompt) to minutes (a long
# generation), so the buckets are dense below a second and sparse above.
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5,
                     10.0, 20.0, 30.0, 60.0, 120.0)
# An engine replica's start: seconds (a small model's serving layer) to many minutes (a large
# model's weights from a network file system).
START_BUCKETS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0)
INTER_TOKEN_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2,
                         0.3, 0.5, 1.0, 2.5)


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricSpec:
    """One metric as defined (`name`) and as Prometheus sees it (`exposed`)."""

    name: str
    kind: Kind
    description: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()

    @property
    def exposed(self) -> str:
        """The name to use in PromQL (without `_bucket`/`_sum`/`_count` for histograms)."""
        suffix = "_total" if self.kind is Kind.COUNTER else ""
        return f"{RAY_PREFIX}{self.name}{suffix}"


_REQUEST = ("tenant", "endpoint", "model")
_ENGINE = ("endpoint", "model", "replica")

SPECS: tuple[MetricSpec, ...] = (
    # -- gateway: one request as its tenant saw it -------------------------------------------
    MetricSpec("aifactory_requests", Kind.COUNTER,
               "Requests that reached admission, by how they ended "
               "(ok, error, rejected, client_cancelled).", (*_REQUEST, "outcome")),
    MetricSpec("aifactory_rate_limited", Kind.COUNTER,
               "Requests refused by admission (429), by error code "
               "(rate_limit_exceeded, insufficient_quota).", (*_REQUEST, "code")),
    MetricSpec("aifactory_time_to_first_token_seconds", Kind.HISTOGRAM,
               "Time from a streamed request's arrival to its first content event.",
               _REQUEST, LATENCY_BUCKETS_S),
    MetricSpec("aifactory_inter_token_latency_seconds", Kind.HISTOGRAM,
               "A streamed request's mean gap between content events after the first "
               "(one observation per request with two or more).", _REQUEST,
               INTER_TOKEN_BUCKETS_S),
    MetricSpec("aifactory_request_duration_seconds", Kind.HISTOGRAM,
               "Time from a request's admission to its end, any outcome but rejected.",
               _REQUEST, LATENCY_BUCKETS_S),
    MetricSpec("aifactory_prompt_tokens", Kind.COUNTER,
               "Prompt tokens of finished requests, as the engine counted them.", _REQUEST),
    MetricSpec("aifactory_completion_tokens", Kind.COUNTER,
               "Completion tokens of finished requests, as the engine counted them.", _REQUEST),
    MetricSpec("aifactory_requests_in_flight", Kind.GAUGE,
               "Admitted requests not finished yet, per gateway process.", _REQUEST),
    MetricSpec("aifactory_slo_requests", Kind.COUNTER,
               "Successful streamed requests by whether they met both of their tenant's "
               "targets (time to first token and inter-token latency): slo=met|missed.",
               (*_REQUEST, "slo")),
    MetricSpec("aifactory_tenant_slo_target_seconds", Kind.GAUGE,
               "A tenant's p95 latency target in seconds, by sli (ttft, itl).",
               ("tenant", "sli")),
    MetricSpec("aifactory_tenant_slo_objective_ratio", Kind.GAUGE,
               "The share of a tenant's requests that must meet its targets (e.g. 0.99).",
               ("tenant",)),
    MetricSpec("aifactory_ledger_dead_letters", Kind.COUNTER,
               "Usage records the store refused for good, kept in the spool's dead-letter "
               "file instead of the ledger (a bug or a tampered spool: alert on any).",
               ("tenant",)),
    # -- batch jobs: their lines are counted here, never in the request metrics above -------
    MetricSpec("aifactory_batch_lines", Kind.COUNTER,
               "Batch lines that ended, by outcome (as aifactory_requests' outcome label).",
               (*_REQUEST, "outcome")),
    MetricSpec("aifactory_batch_prompt_tokens", Kind.COUNTER,
               "Prompt tokens of ended batch lines, as the engine counted them.", _REQUEST),
    MetricSpec("aifactory_batch_completion_tokens", Kind.COUNTER,
               "Completion tokens of ended batch lines (rate(): a tenant's batch tokens/s).",
               _REQUEST),
    MetricSpec("aifactory_batch_lines_pending", Kind.GAUGE,
               "A tenant's lines of unfinished batches not yet ended, by state (queued, "
               "running), as the store holds them; every gateway replica reports the same "
               "figure, so aggregate with max.", ("tenant", "state")),
    # -- engine: vLLM's own scheduler and iteration stats --------------------------------------
    MetricSpec("aifactory_queue_time_seconds", Kind.HISTOGRAM,
               "Time a finished request waited in the engine's queue before its first "
               "scheduling (vLLM's queued time).", ("endpoint", "model"), LATENCY_BUCKETS_S),
    MetricSpec("aifactory_engine_requests_waiting", Kind.GAUGE,
               "Requests waiting in the engine's scheduler queue.", _ENGINE),
    MetricSpec("aifactory_engine_requests_running", Kind.GAUGE,
               "Requests the engine is running (in the batch).", _ENGINE),
    MetricSpec("aifactory_engine_kv_cache_usage_ratio", Kind.GAUGE,
               "Share of the engine's KV-cache blocks in use (0 to 1).", _ENGINE),
    MetricSpec("aifactory_engine_prefix_cache_queries", Kind.COUNTER,
               "Prompt tokens looked up in the engine's prefix cache.", _ENGINE),
    MetricSpec("aifactory_engine_prefix_cache_hits", Kind.COUNTER,
               "Prompt tokens found in the engine's prefix cache.", _ENGINE),
    MetricSpec("aifactory_engine_generation_tokens", Kind.COUNTER,
               "Tokens the engine generated.", _ENGINE),
    MetricSpec("aifactory_engine_start_phase_seconds", Kind.HISTOGRAM,
               "An engine replica's start, by phase (process, engine process, weights, "
               "kv cache, serving layer, linking): one observation per phase per start.",
               ("endpoint", "phase"), START_BUCKETS_S),
    # -- autoscaler: recorded by the partition controller --------------------------------------
    MetricSpec("aifactory_partition_capacity_accelerators", Kind.GAUGE,
               "Accelerators of the partition, by kind.", ("accelerator",)),
    MetricSpec("aifactory_endpoint_allocated_accelerators", Kind.GAUGE,
               "Accelerators the autoscaler allocates to an endpoint.", ("endpoint",)),
    MetricSpec("aifactory_endpoint_guaranteed_replicas", Kind.GAUGE,
               "Replicas an endpoint is guaranteed.", ("endpoint",)),
    MetricSpec("aifactory_endpoint_replicas_target", Kind.GAUGE,
               "Replicas the autoscaler wants for an endpoint.", ("endpoint",)),
    MetricSpec("aifactory_endpoint_replicas_actual", Kind.GAUGE,
               "Replicas an endpoint is running.", ("endpoint",)),
    MetricSpec("aifactory_autoscaler_decisions", Kind.COUNTER,
               "Scaling decisions the autoscaler carried out, by reason.", ("endpoint", "reason")),
)

BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in SPECS}


def exposed_name(name: str) -> str:
    """`exposed_name("aifactory_requests")` -> "ray_aifactory_requests_total"."""
    return BY_NAME[name].exposed


def model_label(model: str | None) -> str:
    """A short, stable model label: a Hugging Face id as is ("org/name"), a local folder by
    its last component ("/data/models/llama-3-8b" -> "llama-3-8b")."""
    if not model:
        return "unknown"
    text = model.rstrip("/")
    if text.startswith(("/", ".", "~")) or text.count("/") > 1:
        return text.rsplit("/", 1)[-1] or "unknown"
    return text


# -- recording -----------------------------------------------------------------------------


class _Disabled:
    """Stands in for a metric outside Ray: recording does nothing."""

    def inc(self, value: float = 1.0, tags: Mapping[str, str] | None = None) -> None: ...

    def set(self, value: float, tags: Mapping[str, str] | None = None) -> None: ...

    def observe(self, value: float, tags: Mapping[str, str] | None = None) -> None: ...


_DISABLED = _Disabled()
_made: dict[str, Any] = {}
_lock = threading.Lock()


def _ray_running() -> bool:
    import sys

    ray = sys.modules.get("ray")  # never import Ray just to find it is not running
    return ray is not None and ray.is_initialized()


def _make(spec: MetricSpec) -> Any:
    from ray.util import metrics as ray_metrics

    if spec.kind is Kind.COUNTER:
        return ray_metrics.Counter(spec.name, spec.description, tag_keys=spec.labels)
    if spec.kind is Kind.GAUGE:
        return ray_metrics.Gauge(spec.name, spec.description, tag_keys=spec.labels)
    return ray_metrics.Histogram(spec.name, spec.description, boundaries=list(spec.buckets),
                                 tag_keys=spec.labels)


def metric(name: str) -> Any:
    """The metric `name` (a Ray Counter, Gauge or Histogram), made on first use; a do-nothing
    stand-in outside Ray. Unknown names raise KeyError: every metric is in `SPECS`."""
    made = _made.get(name)
    if made is not None:
        return made
    spec = BY_NAME[name]
    if not _ray_running():
        return _DISABLED
    with _lock:
        made = _made.get(name)
        if made is None:
            try:
                made = _make(spec)
            except Exception:  # a metrics back end that cannot start must not fail requests
                logger.warning("metric %s cannot be recorded here", name, exc_info=True)
                made = _DISABLED
            _made[name] = made
    return made


def inc(name: str, tags: Mapping[str, str], value: float = 1.0) -> None:
    if value:
        metric(name).inc(value, tags=dict(tags))


def set_gauge(name: str, tags: Mapping[str, str], value: float) -> None:
    """Set a gauge; this process re-sends it every GAUGE_REFRESH_S while it lives."""
    made = metric(name)
    made.set(value, tags=dict(tags))
    if made is not _DISABLED:
        _live_gauges[(name, tuple(sorted(tags.items())))] = value
        _start_refresher()


# Ray's metrics agent drops a gauge series that its process has not re-sent within two
# export intervals (2 x 10 s): right for a dead process, whose series must go stale rather
# than read on, but a gauge set once and unchanged (a tenant's target, an idle engine's 0)
# would vanish too. So every live gauge is sent again well within that time.
GAUGE_REFRESH_S = 5.0
_live_gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
_refresher: threading.Thread | None = None


def _start_refresher() -> None:
    global _refresher
    if _refresher is not None:
        return
    with _lock:
        if _refresher is None:
            _refresher = threading.Thread(target=_refresh_gauges, name="aifactory-gauges",
                                          daemon=True)
            _refresher.start()


def _refresh_gauges() -> None:
    while True:
        time.sleep(GAUGE_REFRESH_S)
        for (name, tags), value in list(_live_gauges.items()):
            try:
                metric(name).set(value, tags=dict(tags))
            except Exception:  # the process is shutting down; nothing to keep alive
                return


def observe(name: str, tags: Mapping[str, str], value: float) -> None:
    metric(name).observe(value, tags=dict(tags))
