"""SLA reports over real HTTP on SQLite and PostgreSQL: the admin route and the tenant's own,
their figures checked against the ledger records of the same window, and who may read them."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest

from observability.slo import SloSettings
from serving.tenancy import KeyScope, Outcome, UsageRecord
from tests.admin.test_api import error_of, iso

if TYPE_CHECKING:
    from tests.admin.conftest import Api

T0 = datetime(2025, 3, 14, 0, 0, tzinfo=UTC)
WINDOW = {"since": iso(T0), "until": iso(T0 + timedelta(days=1))}
OUTCOMES = [Outcome.OK] * 16 + [Outcome.ERROR, Outcome.REJECTED, Outcome.CLIENT_CANCELLED]


def seeded_records() -> list[UsageRecord]:
    """300 acme requests over two days (the window holds the first), a few without timings,
    and beta's requests in the same hours."""
    rng = random.Random(5)
    records = []
    for n in range(300):
        tenant = "beta" if n % 7 == 0 else "acme"
        outcome = rng.choice(OUTCOMES)
        streamed = outcome is not Outcome.REJECTED and n % 11 != 0
        completion = 0 if outcome in (Outcome.REJECTED, Outcome.ERROR) else rng.randint(1, 64)
        ttft = round(rng.uniform(0.05, 1.2), 4) if streamed else None
        duration = None if outcome is Outcome.REJECTED else round(
            (ttft or 0) + completion * rng.uniform(0.01, 0.08), 4)
        at = T0 + timedelta(minutes=9.6 * n)
        records.append(UsageRecord(f"req-{n}", tenant, "afk_abcdefgh", "llama",
                                   0 if outcome is Outcome.REJECTED else rng.randint(5, 500),
                                   completion, ttft, duration, outcome, at, at))
    return records


@pytest.fixture
def seeded(api: Api) -> Api:
    api.store.create_tenant("acme", slo=SloSettings(ttft_p95_ms=900, itl_p95_ms=60,
                                                    objective=0.95))
    api.store.create_tenant("beta")
    api.store.record_usage(seeded_records())
    return api


def expected_from_the_ledger(api: Api) -> dict:
    """The figures recomputed from the ledger's own records for the window, with numpy's
    inverted-CDF percentiles (the nearest-rank definition)."""
    rows = api.store.usage_records("acme", T0, T0 + timedelta(days=1))
    ok = [r for r in rows if r.outcome is Outcome.OK]
    errors = sum(r.outcome is Outcome.ERROR for r in rows)
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    itls = [(r.duration_s - r.ttft_s) / (r.completion_tokens - 1) for r in ok
            if r.ttft_s is not None and r.duration_s is not None and r.completion_tokens >= 2]
    judged = [r for r in ok if r.ttft_s is not None]
    compliant = [r for r in judged if r.ttft_s <= 0.9 and (
        r.completion_tokens < 2 or (r.duration_s - r.ttft_s) / (r.completion_tokens - 1) <= 0.06)]

    def pct(values: list[float]) -> list[float]:
        return [float(np.percentile(values, p, method="inverted_cdf")) for p in (50, 95, 99)]

    return {"requests": len(rows), "ok": len(ok), "errors": errors,
            "rejected": sum(r.outcome is Outcome.REJECTED for r in rows),
            "ttft": pct(ttfts), "itl": pct(itls), "judged": len(judged),
            "compliant": len(compliant),
            "prompt": sum(r.prompt_tokens for r in rows),
            "completion": sum(r.completion_tokens for r in rows)}


def test_the_report_matches_the_ledger_for_the_window(seeded: Api) -> None:
    response = seeded.client.get("/tenants/acme/sla", params=WINDOW)
    assert response.status_code == 200, response.text
    report = response.json()
    want = expected_from_the_ledger(seeded)
    assert want["requests"] > 100 and want["errors"] > 0 and want["rejected"] > 0

    assert (report["object"], report["tenant"], report["since"], report["until"]) == (
        "sla_report", "acme", WINDOW["since"], WINDOW["until"])
    assert report["requests"] == want["requests"]
    assert report["outcomes"]["ok"] == want["ok"]
    assert report["rejections"] == want["rejected"]
    assert report["availability"] == pytest.approx(want["ok"] / (want["ok"] + want["errors"]))
    assert [report["ttft"][k] for k in ("p50_s", "p95_s", "p99_s")] == pytest.approx(want["ttft"])
    assert [report["itl"][k] for k in ("p50_s", "p95_s", "p99_s")] == pytest.approx(want["itl"])
    assert (report["ttft"]["target_p95_s"], report["itl"]["target_p95_s"]) == (0.9, 0.06)
    assert report["ttft"]["met"] == (want["ttft"][1] <= 0.9)
    assert (report["judged"], report["compliant"]) == (want["judged"], want["compliant"])
    assert report["objective"] == 0.95
    assert report["objective_met"] == (want["compliant"] / want["judged"] >= 0.95)
    assert (report["prompt_tokens"], report["completion_tokens"]) == (want["prompt"],
                                                                      want["completion"])
    # Hourly buckets add up to the window.
    assert report["bucket"] == "hour"
    assert sum(b["requests"] for b in report["buckets"]) == want["requests"]

    # The usage route reads the same ledger: the same requests and tokens.
    usage = seeded.client.get("/tenants/acme/usage", params=WINDOW).json()
    assert (usage["requests"], usage["total_tokens"]) == (report["requests"],
                                                          report["total_tokens"])


def test_the_window_defaults_to_the_last_day(seeded: Api) -> None:
    seeded.clock.now = T0 + timedelta(days=2)  # the second day of records
    report = seeded.client.get("/tenants/acme/sla").json()
    assert (report["since"], report["until"]) == (iso(T0 + timedelta(days=1)),
                                                  iso(T0 + timedelta(days=2)))
    second_day = seeded.store.usage_records("acme", T0 + timedelta(days=1),
                                            T0 + timedelta(days=2))
    assert report["requests"] == len(second_day) > 0


def test_a_tenant_reads_its_own_report_and_no_other(seeded: Api) -> None:
    key = seeded.store.create_key("acme").plaintext
    with httpx.Client(base_url=f"{seeded.url}/tenant/v1", timeout=10,
                      headers={"Authorization": f"Bearer {key}"}) as acme:
        own = acme.get("/sla", params=WINDOW)
        assert own.status_code == 200, own.text
        assert own.json() == seeded.client.get("/tenants/acme/sla", params=WINDOW).json()
        # No way to name another tenant: the route takes its tenant from the key.
        error_of(acme.get("/sla", params={**WINDOW, "tenant": "beta"}), 400)
    with seeded.as_key(key) as inference_key:
        error_of(inference_key.get("/tenants/acme/sla", params=WINDOW), 403)
    with seeded.as_key(None) as anonymous:
        error_of(anonymous.get("/tenants/acme/sla"), 401)


def test_a_tenant_without_traffic_gets_an_empty_report(seeded: Api) -> None:
    seeded.store.create_tenant("idle")
    report = seeded.client.get("/tenants/idle/sla", params=WINDOW).json()
    assert report["requests"] == 0 and report["buckets"] == []
    assert (report["availability"], report["compliance"], report["ttft"]["p95_s"]) == (
        None, None, None)


@pytest.mark.parametrize(("path", "status", "words"), [
    ("/tenants/ghost/sla", 404, "no tenant named 'ghost'"),
    ("/tenants/acme/sla?since=2025-03-14T00:00:00", 400, "timezone"),
    ("/tenants/acme/sla?since=2025-03-15T00:00:00Z&until=2025-03-14T00:00:00Z", 400,
     "until: must be after since"),
    ("/tenants/acme/sla?by=day", 400, "Extra inputs"),
    ("/tenants/BAD/sla", 400, "tenant: must match"),
    ("/tenants/acme/sla?since=2024-01-01T00:00:00Z&until=2025-03-14T00:00:00Z", 400,
     "at most 93 days"),
])
def test_bad_requests_are_refused(seeded: Api, path: str, status: int, words: str) -> None:
    error = error_of(seeded.client.get(path), status)
    assert words in error["message"], error["message"]


def test_an_admin_key_of_a_suspended_tenant_cannot_read_reports(seeded: Api) -> None:
    seeded.store.create_tenant("ops")
    key = seeded.store.create_key("ops", scope=KeyScope.ADMIN).plaintext
    seeded.store.update_tenant("ops", status="suspended")
    with seeded.as_key(key) as suspended:
        error_of(suspended.get("/tenants/acme/sla"), 403)
