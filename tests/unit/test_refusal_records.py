"""Refusal rows: a tenant's refusals are all in the ledger up to a burst, then at a steady
rate; one tenant's flood takes nothing from another's allowance."""

from __future__ import annotations

from serving.gateway.refusal_records import RefusalRecords


def test_a_burst_then_the_steady_rate():
    rows = RefusalRecords(burst=5, per_s=2.0)
    assert [rows.keep("a", 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert rows.keep("a", 0.4) is False  # 0.8 of a row earned
    assert rows.keep("a", 0.5) is True  # 1.0
    assert rows.keep("a", 0.5) is False
    kept = sum(rows.keep("a", 1.0 + i / 100) for i in range(1000))  # ten seconds of flood
    assert 19 <= kept <= 21


def test_tenants_have_their_own_allowance():
    rows = RefusalRecords(burst=2, per_s=1.0)
    assert [rows.keep("a", 0.0) for _ in range(3)] == [True, True, False]
    assert [rows.keep("b", 0.0) for _ in range(2)] == [True, True]


def test_an_idle_tenant_earns_no_more_than_its_burst():
    rows = RefusalRecords(burst=3, per_s=10.0)
    rows.keep("a", 0.0)
    assert sum(rows.keep("a", 3600.0) for _ in range(10)) == 3
