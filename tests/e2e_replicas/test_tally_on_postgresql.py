"""The mixed run of tests/e2e's ledger test, here on PostgreSQL and through HAProxy to two
gateway replicas: the ledger's counts and token sums equal what the clients saw. (Named to
run last: its requests would count against the per-minute limit test_replicas sets.)"""

from __future__ import annotations

from tests.ledger_tally import mixed_run_matches_the_ledger


async def test_ledger_matches_what_clients_saw_on_postgresql(platform, store):
    key = store.create_key("acme").plaintext
    await mixed_run_matches_the_ledger(platform["url"], store, "acme", key, "shared")
