"""A monthly budget outlives the counters: when Redis comes back empty (or a replica's own
counters are new), the gateway starts the month's counter from the ledger, so a tenant who
spent 900 of 1,000 tokens cannot spend another 1,000. Real store (SQLite and PostgreSQL),
real Redis."""

from __future__ import annotations

import asyncio
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


async def test_requests_that_find_the_counter_missing_share_one_ledger_read(
        store, acme, redis_client_factory, counter_prefix):
    """Fifty requests arriving on empty counters: one read of the ledger, and the budget
    (900 spent of 1,000) admits what fits, not fifty requests' worth."""
    spent_this_month(store, 900)
    reads = []
    monthly_tokens = store.monthly_tokens

    def counted(*args, **kwargs):
        reads.append(args)
        return monthly_tokens(*args, **kwargs)

    store.monthly_tokens = counted
    counters = RedisAdmissionCounters(redis_client_factory(), prefix=counter_prefix)
    access = Access(store, counters, clock=NOW.timestamp)
    principal = await access.authenticate(f"Bearer {acme}")
    body = {"prompt": "hi", "max_tokens": 19}  # 20 tokens claimed
    admitted = await asyncio.gather(*(access.admit(principal, "demo", f"r{i}", body, 512)
                                      for i in range(50)))
    assert sum(a.decision.admitted for a in admitted) == 5  # 900 + 5 x 20 = 1,000
    assert len(reads) == 1  # the tenant's budget; the endpoint has none
    for one in admitted:
        await access.finish(one, Outcome.OK if one.decision.admitted else Outcome.REJECTED)


class ReleaseFailsFirst(LocalAdmissionCounters):
    """Local counters whose first releases fail, as when Redis does not answer."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def release(self, reservation, actual_tokens):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("counters unreachable")
        return await super().release(reservation, actual_tokens)


async def test_a_failed_release_keeps_the_record_and_frees_the_slot_later(
        store, acme, monkeypatch):
    from serving.gateway import access as access_module

    monkeypatch.setattr(access_module, "RELEASE_RETRY_FIRST_S", 0.01)
    store.set_quota("acme", concurrent_requests=1)
    counters = ReleaseFailsFirst(failures=2)
    access = Access(store, counters, clock=NOW.timestamp)
    principal = await access.authenticate(f"Bearer {acme}")
    held = await access.admit(principal, "demo", "r1", {"prompt": "hi", "max_tokens": 5}, 512)
    assert held.decision.admitted
    await access.finish(held, Outcome.OK, 1, 5)  # the release fails; the record is kept
    assert [r.request_id for r in store.usage_records("acme", NOW, NOW.replace(hour=13))] == \
        ["r1"]
    for _ in range(100):  # retried in the background until the counters answer
        if counters.failures == 0 and (await counters.read(held.reservation.scopes,
                                                           NOW.timestamp()))[0].in_flight == 0:
            break
        await asyncio.sleep(0.01)
    again = await access.admit(principal, "demo", "r2", {"prompt": "hi", "max_tokens": 5}, 512)
    assert again.decision.admitted, "the one slot stayed held"
    await access.finish(again, Outcome.OK, 1, 5)
