"""A tenant's SLA report for a time window, computed from its usage-ledger records.

Pure: records, targets and the window in, a report out; the store and the clock stay outside.
How each figure counts (the report's `definitions` repeats this for its readers):

- requests: every record created in [since, until), whatever its outcome.
- availability = ok / (ok + platform faults). A platform fault is an error the platform owes
  the tenant: no engine reachable, the engine's own failure (its 5xx, a stream broken mid-way),
  or an error of a row from before the ledger kept its class. The tenant's own bad requests
  (the engine's 4xx), its rate limits and quotas, the documented overload refusal (503 with
  Retry-After) and client cancellations count in neither.
- TTFT percentiles: ok requests with a measured time to first token.
- ITL (inter-token latency) per request = (duration - ttft) / (completion_tokens - 1): the
  mean gap between the tokens after the first. Defined for ok requests with both timings and at
  least two completion tokens. Duration runs to the end of the response, so the figure includes
  the final frame's time, a slight overestimate.
- percentiles are nearest-rank over the per-request values (the smallest value with at least
  p% of the values at or below it), not averages of averages.
- compliant: an ok request with a measured TTFT whose TTFT and (where defined) ITL are at or
  below the tenant's p95 targets. compliance = compliant / judged; the objective is met when
  compliance >= objective.
- tokens: prompt and completion tokens of every record (rejected requests record none).
- batch: the lines of batch jobs (a record keyed `{batch_id}-{line}`) are counted apart, in
  the report's `batch` section, and in none of the figures above: they have no latency
  target, and a backlog of them must not dilute (or drag down) the interactive figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from observability.slo import SloTargets
from serving.tenancy.records import Outcome, UsageRecord

PERCENTILES = (50, 95, 99)
# Windows up to two days are charted per hour, longer ones per day.
HOURLY_UP_TO = timedelta(days=2)

DEFINITIONS = {
    "availability": "ok / (ok + platform faults); the tenant's own bad requests, rate "
                    "limits, quotas, overload refusals and cancellations count in neither",
    "itl": "per request: (duration - ttft) / (completion_tokens - 1), for ok requests with "
           "at least 2 completion tokens",
    "percentiles": "nearest-rank over per-request values",
    "compliant": "ok request with a measured TTFT, TTFT <= target and ITL <= target (when "
                 "defined)",
    "batch": "lines of batch jobs, counted only in the batch section: they have no latency "
             "target",
}


@dataclass(frozen=True)
class Latency:
    """Percentiles in seconds of one latency over the window; None where nothing was measured."""

    samples: int
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    target_p95_s: float
    # p95 at or below the target; None without samples.
    met: bool | None


@dataclass(frozen=True)
class Bucket:
    """One hour or day of the window, for the report's charts."""

    start: datetime
    requests: int
    ok: int
    errors: int
    rejected: int
    cancelled: int
    availability: float | None
    ttft_p95_s: float | None
    itl_p95_s: float | None
    compliance: float | None


@dataclass(frozen=True)
class BatchUsage:
    """The window's batch lines: how they ended and what they cost; no latency is judged."""

    batches: int  # distinct batches with a line in the window
    lines: int
    outcomes: dict[str, int]
    availability: float | None  # ok / (ok + platform faults), as for interactive requests
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class SlaReport:
    tenant: str
    since: datetime
    until: datetime
    objective: float
    requests: int
    outcomes: dict[str, int]
    availability: float | None
    ttft: Latency
    itl: Latency
    judged: int
    compliant: int
    compliance: float | None
    objective_met: bool | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    rejections: int
    bucket: Literal["hour", "day"]
    buckets: list[Bucket]
    batch: BatchUsage
    definitions: dict[str, str] = field(default_factory=lambda: dict(DEFINITIONS))
    object: Literal["sla_report"] = "sla_report"

    def as_json(self) -> dict[str, Any]:
        """The report as JSON-ready data: times in ISO 8601 UTC ("...Z")."""
        return _jsonable(asdict(self))


def request_itl(record: UsageRecord) -> float | None:
    """E.g. duration 2.0 s, ttft 0.5 s, 31 tokens: (2.0 - 0.5) / 30 = 0.05 s per token."""
    if (record.outcome is not Outcome.OK or record.ttft_s is None or record.duration_s is None
            or record.completion_tokens < 2):
        return None
    return max(record.duration_s - record.ttft_s, 0.0) / (record.completion_tokens - 1)


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest rank: e.g. p95 of 20 values is the 19th smallest (ceil(0.95 * 20) = 19)."""
    if not ordered:
        return None
    rank = max(math.ceil(p / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def _latency(values: list[float], target: float) -> Latency:
    ordered = sorted(values)
    p50, p95, p99 = (percentile(ordered, p) for p in PERCENTILES)
    return Latency(len(ordered), p50, p95, p99, target, None if p95 is None else p95 <= target)


def _ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


@dataclass
class _Tally:
    """Running sums over a set of records: the whole window, or one bucket of it."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        (o.value for o in Outcome), 0))
    faults: int = 0
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    judged: int = 0
    compliant: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, record: UsageRecord, targets: SloTargets) -> None:
        self.outcomes[record.outcome.value] += 1
        self.faults += record.is_platform_fault
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        if record.outcome is not Outcome.OK or record.ttft_s is None:
            return
        self.ttft.append(record.ttft_s)
        itl = request_itl(record)
        if itl is not None:
            self.itl.append(itl)
        self.judged += 1
        if record.ttft_s <= targets.ttft_p95_s and (itl is None or itl <= targets.itl_p95_s):
            self.compliant += 1

    @property
    def requests(self) -> int:
        return sum(self.outcomes.values())

    @property
    def availability(self) -> float | None:
        ok = self.outcomes[Outcome.OK]
        return _ratio(ok, ok + self.faults)


def _bucket_start(moment: datetime, by: str) -> datetime:
    start = moment.replace(minute=0, second=0, microsecond=0)
    return start.replace(hour=0) if by == "day" else start


def sla_report(records: Iterable[UsageRecord], *, tenant: str, targets: SloTargets,
               since: datetime, until: datetime) -> SlaReport:
    """The report of `tenant`'s records created in [since, until); other records are ignored,
    so a caller may pass a wider selection."""
    if until <= since:
        raise ValueError("until must be after since")
    by: Literal["hour", "day"] = "hour" if until - since <= HOURLY_UP_TO else "day"
    total = _Tally()
    batch, batch_ids = _Tally(), set()
    buckets: dict[datetime, _Tally] = {}
    for record in records:
        if record.tenant != tenant or not since <= record.created_at < until:
            continue
        if (batch_id := record.batch_id) is not None:
            batch.add(record, targets)
            batch_ids.add(batch_id)
            continue
        total.add(record, targets)
        buckets.setdefault(_bucket_start(record.created_at, by), _Tally()).add(record, targets)
    ttft, itl = (_latency(total.ttft, targets.ttft_p95_s),
                 _latency(total.itl, targets.itl_p95_s))
    compliance = _ratio(total.compliant, total.judged)
    return SlaReport(
        tenant=tenant, since=since, until=until, objective=targets.objective,
        requests=total.requests, outcomes=total.outcomes, availability=total.availability,
        ttft=ttft, itl=itl, judged=total.judged, compliant=total.compliant,
        compliance=compliance,
        objective_met=None if compliance is None else compliance >= targets.objective,
        prompt_tokens=total.prompt_tokens, completion_tokens=total.completion_tokens,
        total_tokens=total.prompt_tokens + total.completion_tokens,
        rejections=total.outcomes[Outcome.REJECTED], bucket=by,
        buckets=[Bucket(start, t.requests, t.outcomes[Outcome.OK], t.outcomes[Outcome.ERROR],
                        t.outcomes[Outcome.REJECTED], t.outcomes[Outcome.CLIENT_CANCELLED],
                        t.availability, percentile(sorted(t.ttft), 95),
                        percentile(sorted(t.itl), 95), _ratio(t.compliant, t.judged))
                 for start, t in sorted(buckets.items())],
        batch=BatchUsage(batches=len(batch_ids), lines=batch.requests, outcomes=batch.outcomes,
                         availability=batch.availability, prompt_tokens=batch.prompt_tokens,
                         completion_tokens=batch.completion_tokens,
                         total_tokens=batch.prompt_tokens + batch.completion_tokens),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value
