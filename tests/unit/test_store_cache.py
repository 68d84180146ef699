"""The gateway reads who a key is and what its tenant may call at most once per cache period,
however many requests arrive while the read is in progress (a real SQLite store, its reads
counted)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from serving.gateway.access import Access
from serving.tenancy import LocalAdmissionCounters, Store, Unauthenticated
from tests.unit.stores import sqlite_store

READ_S = 0.05  # each read takes this long, so that concurrent requests overlap it


class CountingStore(Store):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reads: Counter[str] = Counter()
        self.failing = False

    def _read(self, name: str) -> None:
        self.reads[name] += 1
        time.sleep(READ_S)
        if self.failing:
            raise ConnectionError("store unreachable")

    def authenticate(self, token):
        self._read("authenticate")
        return super().authenticate(token)

    def can_use(self, tenant, endpoint):
        self._read("can_use")
        return super().can_use(tenant, endpoint)


@pytest.fixture
def store(tmp_path):
    store = sqlite_store(tmp_path, "t", "m", CountingStore)
    yield store
    store.close()


async def test_concurrent_misses_share_one_read_until_the_entry_expires(store):
    access = Access(store, LocalAdmissionCounters(), cache_ttl_s=0.5)
    key = f"Bearer {store.create_key('t').plaintext}"

    async def request() -> bool:
        principal = await access.authenticate(key)
        return await access.may_use(principal, "m")

    assert all(await asyncio.gather(*(request() for _ in range(50))))
    assert store.reads == {"authenticate": 1, "can_use": 1}

    await asyncio.sleep(0.6)  # expired: read again, once
    assert all(await asyncio.gather(*(request() for _ in range(50))))
    assert store.reads == {"authenticate": 2, "can_use": 2}


async def test_a_failed_read_fails_its_waiters_and_is_not_cached(store):
    access = Access(store, LocalAdmissionCounters(), cache_ttl_s=60)
    key = f"Bearer {store.create_key('t').plaintext}"
    store.failing = True
    results = await asyncio.gather(*(access.authenticate(key) for _ in range(10)),
                                   return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert store.reads["authenticate"] == 1

    store.failing = False  # the store is back: the next request reads it
    assert (await access.authenticate(key)).tenant == "t"
    assert store.reads["authenticate"] == 2


async def test_one_waiter_cancelled_leaves_the_read_to_the_others(store):
    access = Access(store, LocalAdmissionCounters(), cache_ttl_s=60)
    key = f"Bearer {store.create_key('t').plaintext}"
    first = asyncio.ensure_future(access.authenticate(key))
    others = [asyncio.ensure_future(access.authenticate(key)) for _ in range(5)]
    await asyncio.sleep(READ_S / 5)
    first.cancel()
    assert all(p.tenant == "t" for p in await asyncio.gather(*others))
    assert store.reads["authenticate"] == 1


async def test_an_unknown_key_is_refused_from_the_cache_too(store):
    """A client retrying a wrong key (or guessing with one) reads the store once a period."""
    access = Access(store, LocalAdmissionCounters(), cache_ttl_s=0.5)
    wrong = "Bearer afk_" + "x" * 32
    for _ in range(20):
        with pytest.raises(Unauthenticated):
            await access.authenticate(wrong)
    assert store.reads["authenticate"] == 1
    await asyncio.sleep(0.6)
    with pytest.raises(Unauthenticated):
        await access.authenticate(wrong)
    assert store.reads["authenticate"] == 2
