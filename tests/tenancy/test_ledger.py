"""The usage ledger on SQLite and PostgreSQL: idempotent records, month sums, summaries, CSV."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from serving.tenancy import Invalid, Outcome, Store, UsageRecord
from serving.tenancy.ledger import CSV_COLUMNS

T = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)


def record(request_id: str, *, at: datetime = T, tenant: str = "acme", endpoint: str = "llama",
           prompt: int = 10, completion: int = 5, outcome: str = "ok") -> UsageRecord:
    return UsageRecord(request_id=request_id, tenant=tenant, key_prefix="afk_AbCdEfGh",
                       endpoint=endpoint, prompt_tokens=prompt, completion_tokens=completion,
                       ttft_s=0.25, duration_s=1.5, outcome=Outcome(outcome), created_at=at,
                       finished_at=at + timedelta(seconds=1.5))


def all_rows(store: Store) -> list[list[str]]:
    out = io.StringIO()
    store.export_csv(out, datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    return list(csv.reader(io.StringIO(out.getvalue())))[1:]


def test_recording_is_idempotent_on_the_request_id(store: Store) -> None:
    batch = [record("req-1"), record("req-2")]
    assert store.record_usage(batch) == 2
    assert store.record_usage(batch) == 0  # a retried write
    # a batch mixing old and new ids adds the new ones only; the first record of an id wins
    assert store.record_usage([record("req-2", prompt=999), record("req-3")]) == 1
    assert store.record_usage([record("req-4"), record("req-4", prompt=999)]) == 1
    rows = all_rows(store)
    assert [row[0] for row in rows] == ["req-1", "req-2", "req-3", "req-4"]
    assert all(row[4] == "10" for row in rows)
    assert store.record_usage([]) == 0


def test_a_large_batch_goes_in_whole(store: Store) -> None:
    batch = [record(f"r{i}", at=T + timedelta(milliseconds=i)) for i in range(1_200)]
    assert store.record_usage(batch) == 1_200
    assert store.record_usage(batch[::7]) == 0
    assert store.monthly_tokens("acme", 2025, 3) == 1_200 * 15


@pytest.mark.parametrize(("field", "bad"), [
    ("request_id", ""),
    ("request_id", "-leading-dash"),  # would start a CSV cell as a formula
    ("request_id", "id'); DROP TABLE usage_records; --"),
    ("request_id", "r" * 129),
    ("client_request_id", "=cmd|' /C calc'!A0"),
    ("client_request_id", "c" * 129),
    ("client_request_id", "tab\tinside"),
    ("client_request_id", "caf\u00e9"),
    ("http_status", 99),
    ("http_status", "200"),
    ("error_class", "oops"),
    ("adapter", "=cmd|' /C calc'!A0"),  # an adapter's name is a name: no CSV formula
    ("adapter", "T-FT"),
    ("adapter", "a" * 64),
    ("adapter", ""),
    ("tenant", "Acme"),
    ("endpoint", "=HYPERLINK()"),
    ("key_prefix", "@evil"),
    ("prompt_tokens", -1),
    ("completion_tokens", 1.5),
    ("ttft_s", float("nan")),
    ("duration_s", -0.1),
    ("outcome", "timeout"),
    ("created_at", datetime(2025, 3, 14)),  # naive
    ("finished_at", T - timedelta(seconds=1)),  # before created_at
])
def test_a_bad_record_refuses_the_whole_batch(store: Store, field: str, bad: object) -> None:
    store.record_usage([record("before")])
    with pytest.raises(Invalid) as refused:
        store.record_usage([record("good"), replace(record("bad"), **{field: bad})])
    assert refused.value.field == field
    assert [row[0] for row in all_rows(store)] == ["before"]


def test_monthly_tokens_follow_the_utc_calendar_month(store: Store) -> None:
    store.record_usage([
        record("feb-last", at=datetime(2025, 2, 28, 23, 59, 59, 999_999, tzinfo=UTC)),
        record("mar-first", at=datetime(2025, 3, 1, tzinfo=UTC), prompt=100, completion=20),
        record("mar-last", at=datetime(2025, 3, 31, 23, 59, 59, 999_999, tzinfo=UTC),
               prompt=1_000, completion=1),
        record("apr-first", at=datetime(2025, 4, 1, tzinfo=UTC)),
        record("other-tenant", at=datetime(2025, 3, 10, tzinfo=UTC), tenant="beta"),
        record("other-endpoint", at=datetime(2025, 3, 10, tzinfo=UTC), endpoint="qwen",
               prompt=7, completion=0),
        # 01:00 on April 1st at UTC+2 (Paris in summer) is still March in UTC
        record("tz", at=datetime(2025, 4, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))),
               prompt=2, completion=0),
    ])
    # 120 + 1001 + 7 + 2 = 1130
    assert store.monthly_tokens("acme", 2025, 3) == 1_130
    assert store.monthly_tokens("acme", 2025, 3, endpoint="qwen") == 7
    assert store.monthly_tokens("acme", 2025, 2) == 15
    assert store.monthly_tokens("acme", 2025, 5) == 0
    assert store.monthly_tokens("nobody", 2025, 3) == 0


def test_december_rolls_into_the_next_year(store: Store) -> None:
    store.record_usage([record("dec", at=datetime(2024, 12, 31, 23, 59, tzinfo=UTC)),
                        record("jan", at=datetime(2025, 1, 1, tzinfo=UTC), prompt=1)])
    assert store.monthly_tokens("acme", 2024, 12) == 15
    assert store.monthly_tokens("acme", 2025, 1) == 6


@pytest.mark.parametrize(("year", "month", "field"), [(2025, 13, "month"), (2025, 0, "month"),
                                                      (10_000, 1, "year")])
def test_monthly_tokens_checks_the_month(store: Store, year: int, month: int,
                                         field: str) -> None:
    with pytest.raises(Invalid) as refused:
        store.monthly_tokens("acme", year, month)
    assert refused.value.field == field


def test_hourly_and_daily_summaries(store: Store) -> None:
    store.record_usage([
        record("a", at=T + timedelta(minutes=1), prompt=10, completion=1),
        record("b", at=T + timedelta(minutes=59, seconds=59), outcome="error", prompt=20,
               completion=0),
        record("c", at=T + timedelta(hours=1), outcome="client_cancelled", prompt=30,
               completion=3),
        record("d", at=T + timedelta(hours=1, minutes=5), outcome="rejected", prompt=40,
               completion=0),
        record("e", at=T + timedelta(days=1), prompt=50, completion=5),
        record("f", at=T + timedelta(minutes=2), tenant="beta"),
    ])
    hourly = store.usage_summary("acme", T, T + timedelta(days=2))
    assert [(b.start, b.requests, b.prompt_tokens, b.completion_tokens) for b in hourly] == [
        (T, 2, 30, 1),  # a + b
        (T + timedelta(hours=1), 2, 70, 3),  # c + d
        (T + timedelta(days=1), 1, 50, 5),  # e
    ]
    assert hourly[0].outcomes == {"ok": 1, "error": 1, "rejected": 0, "client_cancelled": 0}
    assert hourly[1].outcomes == {"ok": 0, "error": 0, "rejected": 1, "client_cancelled": 1}
    daily = store.usage_summary("acme", T - timedelta(hours=9), T + timedelta(days=2), by="day")
    day = datetime(2025, 3, 14, tzinfo=UTC)
    assert [(b.start, b.requests, b.total_tokens) for b in daily] == [
        (day, 4, 30 + 1 + 70 + 3),
        (day + timedelta(days=1), 1, 55),
    ]
    # the window is [start, end): "c" at exactly T + 1h is out, "b" just before it is in
    assert [b.requests for b in store.usage_summary("acme", T, T + timedelta(hours=1))] == [2]


def test_summary_arguments_are_checked(store: Store) -> None:
    with pytest.raises(Invalid, match=r"by: must be one of hour\|day"):
        store.usage_summary("acme", T, T + timedelta(hours=1), by="week")
    with pytest.raises(Invalid, match="end: must be after start"):
        store.usage_summary("acme", T, T)
    with pytest.raises(Invalid, match="start"):
        store.usage_summary("acme", T.replace(tzinfo=None), T + timedelta(hours=1))


def test_csv_export_of_a_time_window(store: Store) -> None:
    store.record_usage([
        record("early", at=T - timedelta(seconds=1)),
        record("x2", at=T + timedelta(minutes=2), tenant="beta", outcome="error"),
        replace(record("x1", at=T + timedelta(minutes=1), prompt=7, completion=3),
                client_request_id="job-7/line=3"),
        replace(record("x3", at=T + timedelta(minutes=3)), ttft_s=None, finished_at=None,
                duration_s=None, outcome=Outcome.CLIENT_CANCELLED),
        record("late", at=T + timedelta(hours=1)),
    ])
    out = io.StringIO()
    assert store.export_csv(out, T, T + timedelta(hours=1)) == 3
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[1] == ["x1", "acme", "afk_AbCdEfGh", "llama", "7", "3", "10", "0.25", "1.5",
                       "ok", "2025-03-14T09:01:00Z", "2025-03-14T09:01:01.500000Z",
                       "job-7/line=3", "", "", ""]
    assert [row[0] for row in rows[1:]] == ["x1", "x2", "x3"]  # oldest first
    assert rows[3][7:] == ["", "", "client_cancelled", "2025-03-14T09:03:00Z", "", "", "", "",
                           ""]
    only_beta = io.StringIO()
    assert store.export_csv(only_beta, T, T + timedelta(hours=1), tenant="beta") == 1
    assert "x2" in only_beta.getvalue() and "x1" not in only_beta.getvalue()


def test_a_record_keeps_the_adapter_it_ran_with(store: Store) -> None:
    """The LoRA adapter a request ran with is kept, read back and exported; None (an empty
    cell) for the endpoint's own model."""
    store.record_usage([replace(record("on-ft"), adapter="acme-ft"),
                        replace(record("on-base", at=T + timedelta(seconds=1)))])
    read = store.usage_records("acme", T, T + timedelta(hours=1))
    assert [(r.request_id, r.adapter) for r in read] == [("on-ft", "acme-ft"), ("on-base", None)]
    assert read[0] == replace(record("on-ft"), adapter="acme-ft")
    out = io.StringIO()
    store.export_csv(out, T, T + timedelta(hours=1))
    exported = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert CSV_COLUMNS[-1] == "adapter"
    assert [(row["request_id"], row["adapter"]) for row in exported] == [
        ("on-ft", "acme-ft"), ("on-base", "")]
