"""The store (PostgreSQL) goes away under load and comes back: requests that need it fail
fast with 503 and Retry-After, streams already admitted finish, their usage records wait in
the gateway's spool and reach the ledger once the store is back, and full service returns."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx

from serving.gateway.access import STORE_CACHE_TTL_S

STREAMS = 4


def post(platform, key: str, **body) -> httpx.Response:
    with httpx.Client(base_url=platform["url"], timeout=60,
                      headers={"authorization": f"Bearer {key}"}) as http:
        return http.post("/v1/completions",
                         json={"model": "shared", "prompt": "hello", "max_tokens": 4, **body})


def ledger_outcomes(store, key_prefix: str, since: datetime) -> Counter:
    """Outcomes of this key's records only: the package's earlier tests use the same tenant,
    and their last records can fall inside this test's time window."""
    records = store.usage_records("acme", since, datetime.now(UTC) + timedelta(minutes=1))
    return Counter(r.outcome for r in records if r.key_prefix == key_prefix)


def test_store_outage_fails_fast_and_loses_no_record(platform, store, store_link):
    created = store.create_key("acme")
    key = created.plaintext
    since = datetime.now(UTC) - timedelta(seconds=1)
    seen = Counter()
    assert post(platform, key).status_code == 200
    seen[200] += 1

    streaming = threading.Barrier(STREAMS + 1)
    finished: list[str] = []

    def stream() -> None:
        with httpx.Client(base_url=platform["url"], timeout=120,
                          headers={"authorization": f"Bearer {key}"}) as http:
            with http.stream("POST", "/v1/completions", json={
                    "model": "shared", "prompt": "a long story", "max_tokens": 96,
                    "stream": True, "ignore_eos": True}) as response:
                events = response.iter_lines()
                first = next(events)  # admitted and generating
                streaming.wait(timeout=120)
                lines = [line for line in (first, *events) if line.strip()]
        finished.append(f"{response.status_code} {lines[-1]}")

    threads = [threading.Thread(target=stream) for _ in range(STREAMS)]
    for t in threads:
        t.start()
    streaming.wait(timeout=120)

    store_link.cut()
    time.sleep(STORE_CACHE_TTL_S + 0.5)  # what the gateways cached of keys has expired
    refused = []
    for _ in range(4):
        asked = time.monotonic()
        response = post(platform, key)
        refused.append((response, time.monotonic() - asked))
    for t in threads:
        t.join(timeout=180)

    for response, took in refused:
        assert response.status_code == 503, response.text
        assert response.headers.get("retry-after"), response.headers
        assert response.json()["error"]["message"]
        print(f"refused in {took:.2f}s")
    # Admitted before the outage, the streams finished normally: the engine needs no store.
    assert sorted(finished) == ["200 data: [DONE]"] * STREAMS, finished
    seen[200] += STREAMS

    store_link.restore()
    deadline = time.monotonic() + 60
    while (response := post(platform, key)).status_code != 200:
        assert time.monotonic() < deadline, f"no full service after the store came back: " \
                                            f"{response.status_code} {response.text}"
        time.sleep(1)
    seen[200] += 1

    # The streams' records were spooled and replayed: the ledger matches what clients saw,
    # and nothing refused before admission left a record.
    deadline = time.monotonic() + 60
    while (outcomes := ledger_outcomes(store, created.key.prefix, since))["ok"] != seen[200]:
        assert time.monotonic() < deadline, (outcomes, seen)
        time.sleep(1)
    assert outcomes == Counter({"ok": seen[200]}), outcomes
