"""A monthly budget outlives the counters: when Redis comes back empty (or a replica's own
counters are new), the gateway starts the month's counter from the ledger, so a tenant who
spent 900 of 1,000 tokens cannot spend another 1,000. Real store (SQLite and PostgreSQL),
real Redis."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from serving.gateway.access import Access
from serving.tenancy import LocalAdmissionCounters, Outcome, UsageRecord
from serving.tenancy.redis_counters import RedisAdmissionCounters

NOW = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)


def spent_this_month(store, tokens: int) -> None:
    store.record_usage([UsageRecord(
        request_id="earlier", tenant="acme", key_prefix="afk_x", endpoint="demo",
        prompt_tokens=tokens - 100, completion_tokens=100, ttft_s=0.1, duration_s=1.0,
        outcome=Outcome.OK, created_at=NOW, finished_at=NOW)])


@pytest.fixture
def acme(store):
    store.create_tenant("acme")
    store.create_endpoint("demo", owner="acme")
    store.set_quota("acme", tokens_per_month=1000)
    return store.create_key("acme").plaintext


@pytest.mark.parametrize("counters_kind", ["redis", "local"])
async def test_budget_spent_before_the_counters_were_lost_still_counts(
        counters_kind, store, acme, redis_client_factory, counter_prefix):
    spent_this_month(store, 900)
    # Empty counters: a Redis that restarted with nothing, or a gateway replica just started.
    counters = (RedisAdmissionCounters(redis_client_factory(), prefix=counter_prefix)
                if counters_kind == "redis" else LocalAdmissionCounters())
    access = Access(store, counters, clock=NOW.timestamp)
    principal = await access.authenticate(f"Bearer {acme}")

    small = await access.admit(principal, "demo", "r1", {"prompt": "hi", "max_tokens": 50}, 512)
    assert small.decision.admitted  # 900 + (1 + 50) fits 1,000
    big = await access.admit(principal, "demo", "r2", {"prompt": "hi", "max_tokens": 100}, 512)
    assert not big.decision.admitted
    assert big.decision.error_code == "insufficient_quota"
    for admitted in (small, big):
        await access.finish(admitted, Outcome.OK if admitted.decision.admitted
                            else Outcome.REJECTED)


async def test_an_existing_counter_is_not_overwritten(store, acme, redis_client_factory,
                                                      counter_prefix):
    counters = RedisAdmissionCounters(redis_client_factory(), prefix=counter_prefix)
    first = Access(store, counters, clock=NOW.timestamp)
    principal = await first.authenticate(f"Bearer {acme}")
    held = await first.admit(principal, "demo", "r1", {"prompt": "hi", "max_tokens": 600}, 512)
    assert held.decision.admitted  # 601 reserved in Redis, nothing in the ledger yet
    # A second replica starts: the ledger says 0, but Redis's 601 stands.
    second = Access(store, counters, clock=NOW.timestamp)
    refused = await second.admit(principal, "demo", "r2", {"prompt": "hi", "max_tokens": 600},
                                 512)
    assert refused.decision.error_code == "insufficient_quota"
    await first.finish(held, Outcome.OK, 1, 600)
    await second.finish(refused, Outcome.REJECTED)
