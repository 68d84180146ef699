"""Hostile clients against the running platform (issue 16): request ids chosen to collide or
to break the ledger, prompt lists that would claim one prompt's quota for a thousand, bodies
whose shape the gateway reads wrong. Each probe ends in a clear 4xx, or in a record that is
kept, never in a lost record, a leaked slot or another tenant's data."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.e2e.test_tenancy import new_tenant

SMALL = {"prompt": "hello", "max_tokens": 2}


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def records_of(store, tenant: str, since: datetime) -> list:
    return store.usage_records(tenant, since, datetime.now(UTC) + timedelta(minutes=1))


def wait_for_records(store, tenant: str, since: datetime, count: int) -> list:
    for _ in range(100):
        found = records_of(store, tenant, since)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    return records_of(store, tenant, since)


def test_a_client_request_id_is_kept_beside_the_platforms_own(platform, store):
    """Two tenants giving the same ids: four records, each keyed by the platform's own id,
    the client's x-client-request-id beside it and echoed; a client's x-request-id is no key
    (proxies set that header too); x-request-id appears once, the platform's."""
    since = datetime.now(UTC)
    shared_id = f"job-{uuid.uuid4().hex[:8]}"
    tenants = [new_tenant(store), new_tenant(store)]
    platform_ids = []
    for _, key in tenants:
        for given in ({"x-client-request-id": shared_id, "x-request-id": shared_id},
                      {"x-client-request-id": shared_id}):
            reply = httpx.post(platform["url"] + "/v1/completions", timeout=60,
                               json={"model": "demo-remote", **SMALL},
                               headers={"authorization": f"Bearer {key}", **given})
            assert reply.status_code == 200, reply.text
            assert reply.headers["x-client-request-id"] == shared_id
            assert len(reply.headers.get_list("x-request-id")) == 1
            assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["x-request-id"])
            platform_ids.append(reply.headers["x-request-id"])
    assert len(set(platform_ids)) == 4
    for name, _ in tenants:
        kept = wait_for_records(store, name, since, 2)
        assert len(kept) == 2, "a record was lost to another tenant's id"
        assert {r.client_request_id for r in kept} == {shared_id}
        assert {r.request_id for r in kept} <= set(platform_ids)


@pytest.mark.parametrize(("headers", "param"), [
    ([("x-client-request-id", "x" * 129)], "x-client-request-id"),
    ([("x-client-request-id", "-starts-with-a-dash")], "x-client-request-id"),
    ([("x-client-request-id", b"caf\xe9")], "x-client-request-id"),
    ([("x-client-request-id", "tab\there")], "x-client-request-id"),
    ([("x-client-request-id", "one"), ("x-client-request-id", "two")], "x-client-request-id"),
])
def test_a_request_id_the_ledger_cannot_keep_is_refused_up_front(platform, store, headers,
                                                                  param):
    """Refused with 400 before admission: no slot taken, no record, and the ledger keeps
    taking the next request's record (before, such an id stalled the node's ledger)."""
    since = datetime.now(UTC)
    name, key = new_tenant(store, concurrent_requests=1)
    with httpx.Client(base_url=platform["url"], timeout=60) as http:
        for _ in range(3):
            refused = http.post("/v1/completions", json={"model": "demo-remote", **SMALL},
                                headers=[("authorization", f"Bearer {key}"), *headers])
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["param"] == param
            assert "x-client-request-id" not in refused.headers
        ok = http.post("/v1/completions", json={"model": "demo-remote", **SMALL},
                       headers={"authorization": f"Bearer {key}"})
    assert ok.status_code == 200, ok.text  # the concurrency slot of 1 was never taken
    kept = wait_for_records(store, name, since, 1)
    assert [r.request_id for r in kept] == [ok.headers["x-request-id"]]


def test_every_prompt_of_a_list_is_claimed_from_the_quota(platform, store):
    """max_tokens x n for every prompt: 200 prompts of 16 tokens claim 3,200 tokens, past a
    quota of 2,000 a minute, where they claimed 16 before."""
    since = datetime.now(UTC)
    name, key = new_tenant(store, tokens_per_minute=2000)
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": "demo-remote", "max_tokens": 16, "ignore_eos": True}
    with httpx.Client(base_url=platform["url"], timeout=120, headers=headers) as http:
        many = http.post("/v1/completions", json={**body, "prompt": ["hi"] * 200})
        assert many.status_code == 429, many.text
        assert "token" in many.json()["error"]["message"]
        # A list that fits is served whole and counted whole.
        fits = http.post("/v1/completions", json={**body, "prompt": ["hi", "yo", "ok"], "n": 2})
    assert fits.status_code == 200, fits.text
    assert len(fits.json()["choices"]) == 6
    assert fits.json()["usage"]["completion_tokens"] == 3 * 2 * 16
    kept = wait_for_records(store, name, since, 2)
    served = [r for r in kept if r.request_id == fits.headers["x-request-id"]]
    assert [r.completion_tokens for r in served] == [96]


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": ["x"] * 2049, "max_tokens": 1}, "prompt"),
    ({"prompt": [[1, 2]] * 2049, "max_tokens": 1}, "prompt"),
    ({"prompt": [], "max_tokens": 1}, "prompt"),
    ({"prompt": "x", "max_tokens": 1, "stream": True, "stream_options": "yes"},
     "stream_options"),
    ({"prompt": "x", "max_tokens": 1, "stream": True, "stream_options": [1]}, "stream_options"),
    ({"prompt": "x", "max_tokens": 1, "metadata": {"deep": nested(70)}}, None),
])
def test_bodies_the_gateway_would_misread_are_refused_before_admission(platform, store, body,
                                                                        param):
    """400 with the field named; the tenant's one concurrency slot stays free (before, a
    string stream_options ended in a 500 with the slot held for an hour)."""
    name, key = new_tenant(store, concurrent_requests=1)
    with httpx.Client(base_url=platform["url"], timeout=60,
                      headers={"authorization": f"Bearer {key}"}) as http:
        for _ in range(2):
            refused = http.post("/v1/completions", json={"model": "demo-remote", **body})
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["param"] == param
        ok = http.post("/v1/completions", json={"model": "demo-remote", **SMALL})
    assert ok.status_code == 200, ok.text


def test_json_nested_past_the_parser_is_a_400(platform, auth):
    deep = '{"model": "demo-remote", "prompt": "x", "metadata": ' + "[" * 100_000 + \
        "]" * 100_000 + "}"
    reply = httpx.post(platform["url"] + "/v1/completions", content=deep, timeout=60,
                       headers={**auth, "content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["type"] == "invalid_request_error"


def test_models_and_readiness_show_no_paths_or_other_tenants_endpoints(platform, keys):
    with httpx.Client(base_url=platform["url"], timeout=30) as http:
        models = http.get("/v1/models", headers={"authorization": f"Bearer {keys['globex']}"})
        assert [(m["id"], m["root"]) for m in models.json()["data"]] == [
            ("demo-remote", "demo-remote")]
        assert "/" not in models.text  # no folder of the partition's disks
        anonymous = http.get("/ready")
    assert anonymous.json() == {"ready": True}  # not which endpoints exist, nor whose


def test_a_tenants_bad_requests_do_not_lower_its_availability(platform, store):
    """The ledger keeps the status and why; the SLA counts only the platform's faults."""
    since = datetime.now(UTC)
    name, key = new_tenant(store)
    headers = {"authorization": f"Bearer {key}"}
    with httpx.Client(base_url=platform["url"], timeout=60, headers=headers) as http:
        ok = http.post("/v1/completions", json={"model": "demo-remote", **SMALL})
        # Longer than the engine's context of 512: the engine's own 400.
        bad = http.post("/v1/completions", json={"model": "demo-remote", "prompt": "x",
                                                   "max_tokens": 100_000})
        assert (ok.status_code, bad.status_code) == (200, 400), bad.text
        kept = {r.request_id: r for r in wait_for_records(store, name, since, 2)}
        record = kept[bad.headers["x-request-id"]]
        assert (record.http_status, record.error_class) == (400, "client_error")
        assert kept[ok.headers["x-request-id"]].http_status == 200
        sla = http.get("/tenant/v1/sla")
    assert sla.status_code == 200, sla.text
    assert sla.json()["availability"] == 1.0 and sla.json()["outcomes"]["error"] == 1
