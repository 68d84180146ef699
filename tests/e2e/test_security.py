"""Hostile clients against the running platform (issue 16): request ids chosen to collide or
to break the ledger, prompt lists that would claim one prompt's quota for a thousand, bodies
whose shape the gateway reads wrong. Each probe ends in a clear 4xx, or in a record that is
kept, never in a lost record, a leaked slot or another tenant's data."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.e2e.test_tenancy import new_tenant, post

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


POST_ROUTES = ["/v1/completions", "/v1/chat/completions", "/v1/responses", "/v1/embeddings",
               "/tokenize", "/detokenize", "/pooling", "/score", "/v1/score", "/rerank",
               "/v1/rerank", "/v2/rerank"]


@pytest.mark.parametrize("path", POST_ROUTES)
def test_json_nested_past_the_parser_is_a_400(platform, auth, path):
    deep = '{"model": "demo-remote", "prompt": "x", "metadata": ' + "[" * 100_000 + \
        "]" * 100_000 + "}"
    reply = httpx.post(platform["url"] + path, content=deep, timeout=60,
                       headers={**auth, "content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", POST_ROUTES)
@pytest.mark.parametrize(("raw", "status"), [
    (b'{"model": "demo-remote", "input": ', 400),  # cut short
    (b'["model", "demo-remote"]', 400),  # not an object
    (b'{"model": "demo-remote", "input": ' + b"[" * 70 + b"]" * 70 + b"}", 400),  # past 64
    (b'{"model": "' + b"m" * 100_000 + b'", "input": "x"}', 404),  # a name none can have
    (b'{"model": "demo-remote", "input": "' + b"a" * (9 << 20) + b'"}', 413),
])
def test_every_post_route_refuses_hostile_bodies_in_openais_shape(platform, auth, path, raw,
                                                                   status):
    reply = httpx.post(platform["url"] + path, content=raw, timeout=60,
                       headers={**auth, "content-type": "application/json"})
    assert reply.status_code == status, reply.text[:300]
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and len(error["message"]) < 400


FILES_BOUNDARY = "probe"


def files_form(*parts: tuple[str, bytes, str | None], end: bool = True) -> bytes:
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (
            "" if filename is None else f'; filename="{filename}"')
        out += f"--{FILES_BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += value + b"\r\n"
    return out + (f"--{FILES_BOUNDARY}--\r\n".encode() if end else b"")


JSONL = b'{"custom_id": "1"}\n'
PURPOSE = ("purpose", b"batch", None)


@pytest.mark.parametrize(("raw", "multipart", "status", "param"), [
    # The JSON routes' probes: none is a form.
    (b'{"model": "demo-remote", "input": ', False, 400, "file"),
    (b'["model", "demo-remote"]', False, 400, "file"),
    (b'{"model": "demo-remote", "input": "' + b"a" * (9 << 20) + b'"}', False, 400, "file"),
    (b"", True, 400, "file"),
    (files_form(PURPOSE), True, 400, "file"),  # no file
    (files_form(("file", JSONL, "a.jsonl")), True, 400, "purpose"),
    (files_form(PURPOSE, ("file", JSONL, "a"), ("file", JSONL, "b")), True, 400, "file"),
    (files_form(("purpose", b"assistants", None), ("file", JSONL, "a")), True, 400, "purpose"),
    (files_form(("purpose", b"\x00" * 2000, None)), True, 400, "purpose"),
    (files_form(PURPOSE, ("file", JSONL, "a" * 100_000)), True, 400, "file"),
    (files_form(PURPOSE, ("file", b"\xff\xfe\x00", "a.jsonl")), True, 400, "file"),
    (files_form(PURPOSE, ("file", JSONL, "a"), end=False), True, 400, "file"),
    (files_form(PURPOSE, ("file", b"{}\n" * (40 << 20), "big.jsonl")), True, 413, "file"),
])
def test_the_files_route_refuses_hostile_bodies_in_openais_shape(platform, auth, raw,
                                                                 multipart, status, param):
    content_type = (f"multipart/form-data; boundary={FILES_BOUNDARY}" if multipart
                    else "application/json")
    reply = httpx.post(platform["url"] + "/v1/files", content=raw, timeout=60,
                       headers={**auth, "content-type": content_type})
    assert reply.status_code == status, reply.text[:300]
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and len(error["message"]) < 400
    assert error["param"] == param


@pytest.mark.parametrize("file_id", ["..", "%2e%2e", "file-" + "0" * 5000, "file-abc",
                                     "%00", "file-" + "0" * 32])
def test_a_file_id_nobody_has_is_a_404_on_every_files_route(platform, auth, file_id):
    for method, path in (("GET", f"/v1/files/{file_id}"), ("DELETE", f"/v1/files/{file_id}"),
                         ("GET", f"/v1/files/{file_id}/content")):
        reply = httpx.request(method, platform["url"] + path, headers=auth, timeout=30)
        assert reply.status_code == 404, (method, path, reply.text[:300])
        assert set(reply.json()["error"]) == {"message", "type", "param", "code"}


def test_models_and_readiness_show_no_paths_or_other_tenants_endpoints(platform, keys):
    with httpx.Client(base_url=platform["url"], timeout=30) as http:
        models = http.get("/v1/models", headers={"authorization": f"Bearer {keys['globex']}"})
        assert sorted((m["id"], m["root"]) for m in models.json()["data"]) == [
            ("demo-embed", "demo-embed"), ("demo-remote", "demo-remote")]
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


@pytest.mark.parametrize("model", ["demo", "demo-remote"])
def test_a_stream_its_client_abandons_is_billed_the_engines_counts(platform, store, keys,
                                                                   model):
    """M3: a client that reads a few events of a stream and leaves is billed the tokens the
    engine made up to the last relayed event (vLLM's running counts), prompt tokens exact,
    not estimated from the body's characters. Two prompts and n=2: four choices, each
    prompt counted once."""
    tenant, key = ("acme", keys["acme"]) if model == "demo" else new_tenant(store)
    prompts = ["x" * 40, "1 2 3 4 5 6 7 8"]  # the estimate would be far from either count
    headers = {"authorization": f"Bearer {key}"}
    exact = httpx.post(platform["url"] + "/v1/completions", timeout=60, headers=headers,
                       json={"model": model, "prompt": prompts, "max_tokens": 1})
    assert exact.status_code == 200, exact.text
    prompt_tokens = exact.json()["usage"]["prompt_tokens"]
    since = datetime.now(UTC)
    received = 0
    with httpx.Client(base_url=platform["url"], timeout=60, headers=headers) as http:
        with http.stream("POST", "/v1/completions", json={
                "model": model, "prompt": prompts, "n": 2, "max_tokens": 400,
                "ignore_eos": True, "stream": True, "logprobs": 0}) as reply:
            assert reply.status_code == 200
            request_id = reply.headers["x-request-id"]
            for line in reply.iter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[len("data: "):])
                    assert "usage" not in chunk  # the running counts are the gateway's
                    received += len(chunk["choices"][0]["logprobs"]["tokens"])
                if received >= 12:
                    break
    for _ in range(100):
        [record] = [r for r in records_of(store, tenant, since)
                    if r.request_id == request_id] or [None]
        if record is not None:
            break
        time.sleep(0.1)
    assert record is not None and record.outcome.value == "client_cancelled"
    assert record.prompt_tokens == prompt_tokens
    # At least what the client read, at most what 4 choices could make before the engine
    # heard of the disconnect (well under 400 each).
    assert received <= record.completion_tokens < 4 * 400


def test_a_flood_of_refusals_does_not_flood_the_ledger(platform, store):
    """M5: 300 requests over a 1-request-a-minute quota: 299 answers 429, and the ledger
    keeps the tenant's refusals up to its burst, then at the steady rate, not one row each."""
    import asyncio

    from serving.gateway.refusal_records import REFUSAL_ROWS_BURST, REFUSAL_ROWS_PER_S

    tenant, key = new_tenant(store, requests_per_minute=1)
    since = datetime.now(UTC)
    began = time.monotonic()

    async def flood() -> list[int]:
        async with httpx.AsyncClient(base_url=platform["url"], timeout=60, headers={
                "authorization": f"Bearer {key}"}) as http:
            async def one() -> int:
                reply = await http.post("/v1/completions",
                                        json={"model": "demo-remote", **SMALL})
                return reply.status_code
            return await asyncio.gather(*(one() for _ in range(300)))

    statuses = asyncio.run(flood())
    took_s = time.monotonic() - began
    assert sorted(statuses) == [200] + [429] * 299
    time.sleep(2)  # the ledger writer's batches
    rows = records_of(store, tenant, since)
    refused_rows = sum(r.outcome.value == "rejected" for r in rows)
    assert sum(r.outcome.value == "ok" for r in rows) == 1
    assert REFUSAL_ROWS_BURST <= refused_rows <= REFUSAL_ROWS_BURST + REFUSAL_ROWS_PER_S * took_s


def every_operator_and_tenant_route(store) -> list[tuple[str, str]]:
    """(method, path) of every admin and self-service route, read off the routers the
    platform mounts: a route added later is probed without editing this test."""
    from serving.admin.autoscaler import build_autoscaler_router
    from serving.admin.router import build_admin_router
    from serving.admin.self_service import build_tenant_router

    mounted = [("/admin/v1", build_admin_router(store)),
               ("/admin/v1", build_autoscaler_router(store, None)),
               ("/tenant/v1", build_tenant_router(store))]
    return sorted({(method, prefix + route.path) for prefix, router in mounted
                   for route in router.routes for method in route.methods})


def failed_batch(platform, key: str) -> str:
    """The id of a batch of the key's tenant, failed in validation (it runs nothing)."""
    from aifactory_sdk import Client

    line = {"custom_id": "a", "method": "POST", "url": "/v1/completions",
            "body": {"model": "demo-remote", **SMALL}}
    with Client(api_key=key, base_url=platform["url"], max_retries=0) as client:
        made = client.files.create(file=(json.dumps(line) + "\n").encode() * 2)
        batch = client.batches.create(input_file_id=made.id, endpoint="/v1/completions")
    assert batch.status == "failed"  # the custom_id twice
    return batch.id


def test_no_route_lets_one_tenant_see_or_change_another(platform, store):
    """Cross-tenant probes on every admin and self-service route, with the attacker's
    inference key and its own tenant-admin key, the victim's names and ids in the path and
    in a `tenant` query: admin routes refuse (403), self-service answers about the caller
    only, and the victim's key, endpoint grant and quota are as they were."""
    victim, victim_key = new_tenant(store, requests_per_minute=77)
    attacker, attacker_key = new_tenant(store)
    attacker_admin = store.create_key(attacker, scope="admin").plaintext
    victim_key_id = store.list_keys(victim)[0].id
    post(platform, victim_key, {"model": "demo-remote", **SMALL})  # usage to be seen or not
    victim_batch = failed_batch(platform, victim_key)  # finished: a cancel that saw it is a 400
    routes = every_operator_and_tenant_route(store)
    assert len(routes) >= 25
    filled = {"{name}": victim, "{tenant}": victim, "{endpoint}": "demo-remote",
              "{key_id}": str(victim_key_id), "{batch_id}": victim_batch}
    for method, template in routes:
        path = template
        for slot, value in filled.items():
            path = path.replace(slot, value)
        if "/endpoints/" in template and "{name}" in template and "tenants" not in template:
            path = template.replace("{name}", "demo-remote").replace("{tenant}", victim)
        for key in (None, attacker_key, attacker_admin):
            reply = httpx.request(method, platform["url"] + path, params={"tenant": victim},
                                  json={"name": victim, "requests_per_minute": 1},
                                  headers={"authorization": f"Bearer {key}"} if key else {},
                                  timeout=30)
            said = f"{method} {path} with {'no key' if key is None else 'a key'}"
            if key is None:
                assert reply.status_code == 401, said
            elif template.startswith("/admin/v1"):
                assert reply.status_code == 403, (said, reply.text)
            else:
                assert reply.status_code < 500 and victim not in reply.text, (said, reply.text)
    assert post(platform, victim_key, {"model": "demo-remote", **SMALL}).status_code == 200
    assert store.get_quota(victim).requests_per_minute == 77
    assert [k.id for k in store.list_keys(victim) if k.revoked_at is None] == [victim_key_id]
