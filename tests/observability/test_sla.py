"""The SLA report as a pure function of ledger records, targets and a window; and its HTML."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest

from observability.sla import percentile, request_itl, sla_report
from observability.sla_html import render_html
from observability.slo import SloTargets
from serving.tenancy import ErrorClass, Outcome, UsageRecord

T0 = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
TARGETS = SloTargets(ttft_p95_s=1.0, itl_p95_s=0.1, objective=0.9)


def record(n: int, *, outcome: Outcome = Outcome.OK, ttft: float | None = 0.5,
           duration: float | None = 2.0, completion: int = 16, prompt: int = 10,
           tenant: str = "acme", at: datetime = T0) -> UsageRecord:
    return UsageRecord(f"r{n}", tenant, "afk_abcdefgh", "llama", prompt, completion, ttft,
                       duration, outcome, at + timedelta(minutes=n), None)


@pytest.mark.parametrize(("values", "p", "expected"), [
    ([], 95, None),
    ([7.0], 50, 7.0),
    ([1, 2, 3, 4], 50, 2),  # ceil(0.5 * 4) = 2nd
    (list(range(1, 21)), 95, 19),  # ceil(0.95 * 20) = 19th
    (list(range(1, 101)), 99, 99),
    (list(range(1, 101)), 95, 95),
    ([1, 2, 3], 99, 3),  # ceil(2.97) = 3rd
])
def test_percentiles_are_nearest_rank(values: list[float], p: float,
                                      expected: float | None) -> None:
    assert percentile(values, p) == expected


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"ttft": 0.5, "duration": 2.0, "completion": 31}, 0.05),  # (2.0 - 0.5) / 30
    ({"ttft": 0.5, "duration": 0.5, "completion": 2}, 0.0),
    ({"completion": 1}, None),  # one token: no gap to measure
    ({"ttft": None}, None),  # not streamed: no first-token time
    ({"duration": None}, None),
    ({"outcome": Outcome.ERROR}, None),
])
def test_per_request_itl(kwargs: dict, expected: float | None) -> None:
    assert request_itl(record(1, **kwargs)) == expected


def test_figures_over_a_window() -> None:
    records = [
        record(1, ttft=0.2, duration=1.7, completion=16),  # itl 0.1: compliant (at the target)
        record(2, ttft=0.4, duration=2.0, completion=17),  # itl 0.1: compliant
        record(3, ttft=1.5, duration=2.5, completion=11),  # ttft over: not compliant
        record(4, ttft=0.3, duration=3.3, completion=11),  # itl 0.3 over: not compliant
        record(5, ttft=0.9, duration=5.0, completion=1),  # no itl; ttft within: compliant
        record(6, ttft=None, duration=1.0),  # not streamed: counted, not judged
        record(7, outcome=Outcome.ERROR, ttft=None, duration=0.1, completion=0),
        record(8, outcome=Outcome.REJECTED, ttft=None, duration=None, completion=0, prompt=0),
        record(9, outcome=Outcome.CLIENT_CANCELLED, ttft=0.2, duration=0.4, completion=3),
        record(10, tenant="beta"),  # another tenant
        record(11, at=T0 - timedelta(hours=1)),  # before the window
        record(12, at=T0 + timedelta(hours=1)),  # at `until`: outside [since, until)
    ]
    report = sla_report(records, tenant="acme", targets=TARGETS, since=T0,
                        until=T0 + timedelta(minutes=12))
    assert report.requests == 9
    assert report.outcomes == {"ok": 6, "error": 1, "rejected": 1, "client_cancelled": 1}
    assert report.availability == 6 / 7  # ok / (ok + error): an error of unknown class
    assert report.rejections == 1
    # TTFTs of ok requests: 0.2 0.3 0.4 0.9 1.5 -> p50 the 3rd, p95 and p99 the 5th
    assert (report.ttft.samples, report.ttft.p50_s, report.ttft.p95_s, report.ttft.p99_s) == (
        5, 0.4, 1.5, 1.5)
    assert report.ttft.met is False  # 1.5 > 1.0
    # ITLs: 0.1 (1), 0.1 (2), 0.1 (3: (2.5 - 1.5) / 10), 0.3 (4)
    assert report.itl.samples == 4
    assert report.itl.p50_s == pytest.approx(0.1)
    assert report.itl.p95_s == pytest.approx(0.3)
    assert (report.judged, report.compliant) == (5, 3)
    assert report.compliance == 3 / 5
    assert report.objective_met is False  # 0.6 < 0.9
    assert report.prompt_tokens == 10 * 8  # every acme record in the window but the rejected
    assert report.completion_tokens == 16 + 17 + 11 + 11 + 1 + 16 + 0 + 0 + 3
    assert report.total_tokens == report.prompt_tokens + report.completion_tokens
    assert report.bucket == "hour" and len(report.buckets) == 1
    hour = report.buckets[0]
    assert (hour.start, hour.requests, hour.ok, hour.errors, hour.rejected, hour.cancelled) == (
        T0, 9, 6, 1, 1, 1)
    assert (hour.ttft_p95_s, hour.compliance) == (1.5, 3 / 5)


def test_a_window_without_traffic_has_no_made_up_figures() -> None:
    report = sla_report([record(1, tenant="beta")], tenant="acme", targets=TARGETS, since=T0,
                        until=T0 + timedelta(days=30))
    assert report.requests == 0 and report.buckets == []
    assert report.availability is None and report.compliance is None
    assert report.objective_met is None
    assert (report.ttft.p95_s, report.ttft.met, report.itl.samples) == (None, None, 0)
    assert report.bucket == "day"


def test_long_windows_are_bucketed_per_day() -> None:
    records = [record(0), record(1, at=T0 + timedelta(days=1, hours=3)),
               record(2, at=T0 + timedelta(days=1, hours=5))]
    report = sla_report(records, tenant="acme", targets=TARGETS, since=T0,
                        until=T0 + timedelta(days=7))
    assert [(b.start, b.requests) for b in report.buckets] == [
        (T0.replace(hour=0), 1), (T0.replace(hour=0) + timedelta(days=1), 2)]


def test_an_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match="until must be after since"):
        sla_report([], tenant="acme", targets=TARGETS, since=T0, until=T0)


def test_the_json_form_has_utc_times() -> None:
    body = sla_report([record(1)], tenant="acme", targets=TARGETS, since=T0,
                      until=T0 + timedelta(hours=1)).as_json()
    assert (body["object"], body["since"], body["buckets"][0]["start"]) == (
        "sla_report", "2025-03-14T09:00:00Z", "2025-03-14T09:00:00Z")
    assert set(body["definitions"]) == {"availability", "itl", "percentiles", "compliant",
                                       "batch"}


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_the_html_report_is_self_contained_with_charts() -> None:
    records = [record(n, at=T0 + timedelta(hours=n % 5), ttft=0.1 * n) for n in range(40)]
    report = sla_report(records, tenant="acme", targets=TARGETS, since=T0,
                        until=T0 + timedelta(hours=6)).as_json()
    page = render_html(report)
    parsed = _Elements()
    parsed.feed(page)
    tags = [tag for tag, _ in parsed.tags]
    assert tags.count("svg") == 4  # requests, ttft p95, itl p95, compliance
    assert "script" not in tags and "link" not in tags and "img" not in tags
    assert not re.search(r"https?://", page)  # nothing to fetch when the file is opened
    assert "SLA report: acme" in page and "40" in page


def test_the_html_escapes_what_it_shows() -> None:
    report = sla_report([], tenant="acme", targets=TARGETS, since=T0,
                        until=T0 + timedelta(hours=1)).as_json()
    page = render_html({**report, "tenant": "<script>x</script>"})
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "No requests in this window." in page


def test_only_platform_faults_lower_availability() -> None:
    """A run with the tenant's own bad requests and overload refusals is fully available; the
    engine failing and no engine being reachable are not (92.7% was reported for such a run)."""
    def error(n: int, status: int, error_class: ErrorClass) -> UsageRecord:
        return replace(record(n, outcome=Outcome.ERROR, ttft=None, completion=0),
                       http_status=status, error_class=error_class)

    clean = [record(1), record(2), error(3, 400, ErrorClass.CLIENT_ERROR),
             error(4, 503, ErrorClass.OVERLOADED), error(5, 404, ErrorClass.CLIENT_ERROR)]
    report = sla_report(clean, tenant="acme", targets=TARGETS, since=T0,
                        until=T0 + timedelta(hours=1))
    assert report.availability == 1.0 and report.outcomes["error"] == 3
    faulty = [*clean, error(6, 500, ErrorClass.ENGINE_ERROR),
              error(7, 503, ErrorClass.PLATFORM_ERROR)]
    report = sla_report(faulty, tenant="acme", targets=TARGETS, since=T0,
                        until=T0 + timedelta(hours=1))
    assert report.availability == 2 / 4


def test_the_html_escapes_the_bucket_word() -> None:
    """`by` comes from the query string of the SLA routes."""
    report = sla_report([record(5)], tenant="acme", targets=TARGETS,
                        since=T0, until=T0 + timedelta(hours=1)).as_json()
    page = render_html({**report, "bucket": "<img src=x onerror=alert(1)>"})
    assert "<img" not in page and "&lt;img" in page


BATCH = "batch_" + "ab" * 16


def batch_line(line: int, **kwargs) -> UsageRecord:
    """A batch line's record: keyed `{batch_id}-{line}`, not streamed (no TTFT)."""
    return replace(record(line, ttft=None, **kwargs), request_id=f"{BATCH}-{line}")


def test_batch_lines_are_reported_apart_from_interactive_traffic() -> None:
    interactive = [record(1, ttft=0.2, duration=1.7, completion=16),
                   record(2, ttft=1.5, duration=2.5, completion=11)]  # one compliant of two
    lines = [batch_line(3, completion=40, prompt=7), batch_line(4, completion=40, prompt=7),
             batch_line(5, outcome=Outcome.ERROR, completion=0),
             batch_line(6, outcome=Outcome.REJECTED, completion=0, prompt=0),
             replace(batch_line(7, completion=5, prompt=1),
                     request_id="batch_" + "cd" * 16 + "-0")]
    report = sla_report(interactive + lines, tenant="acme", targets=TARGETS, since=T0,
                        until=T0 + timedelta(hours=1))
    # The interactive figures see only the two interactive requests...
    assert report.requests == 2 and report.compliance == 0.5
    assert report.completion_tokens == 27 and report.rejections == 0
    assert sum(bucket.requests for bucket in report.buckets) == 2
    # ...and the batch section only the lines, of two batches.
    batch = report.batch
    assert (batch.batches, batch.lines) == (2, 5)
    assert batch.outcomes == {"ok": 3, "error": 1, "rejected": 1, "client_cancelled": 0}
    assert batch.availability == 3 / 4
    assert (batch.prompt_tokens, batch.completion_tokens, batch.total_tokens) == (
        25, 85, 110)
    html = render_html(report.as_json())
    assert "<h2>Batch jobs</h2>" in html and "110" in html


def test_only_the_platform_s_batch_line_keys_count_as_batch_lines() -> None:
    """A request id merely starting with "batch_" is not a batch line's key."""
    lookalikes = [replace(record(n), request_id=rid) for n, rid in enumerate((
        "batch_123-1", f"{BATCH}-x", f"{BATCH}", f"{BATCH}-1-2", "x" + f"{BATCH}-1"))]
    report = sla_report(lookalikes, tenant="acme", targets=TARGETS, since=T0,
                        until=T0 + timedelta(hours=1))
    assert report.requests == 5 and report.batch.lines == 0
    assert "Batch jobs" not in render_html(report.as_json())
