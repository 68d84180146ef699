"""The admin API over real HTTP on SQLite and PostgreSQL: every route's round trip, who may
call it, and bad input refused with an OpenAI-shaped error and the store left as it was."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi import FastAPI

from serving.admin import build_admin_router
from serving.tenancy import KeyScope, Outcome, Principal, PriorityClass, Store, UsageRecord

if TYPE_CHECKING:
    from tests.admin.conftest import Api, LiveServer


def error_of(response: httpx.Response, status: int) -> dict:
    """The OpenAI-shaped error of a refused request, after checking its status and shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# Tenants


def test_tenants_are_created_listed_read_and_updated(api: Api) -> None:
    created = api.client.post("/tenants", json={"name": "acme", "priority": "critical"})
    assert created.status_code == 201
    assert created.json() == {"object": "tenant", "name": "acme", "priority": "critical",
                              "status": "active", "created_at": iso(api.clock.now),
                              "slo": {"ttft_p95_ms": None, "itl_p95_ms": None,
                                      "objective": None},
                              "slo_targets": {"ttft_p95_ms": 2000, "itl_p95_ms": 200,
                                              "objective": 0.99}}
    assert api.client.post("/tenants", json={"name": "beta"}).json()["priority"] == "standard"

    listed = api.client.get("/tenants").json()
    assert listed["object"] == "list"
    assert [t["name"] for t in listed["data"]] == ["acme", "admin", "beta"]
    assert api.client.get("/tenants/acme").json() == created.json()

    updated = api.client.patch("/tenants/acme", json={"priority": "best_effort",
                                                      "status": "suspended"})
    assert updated.status_code == 200
    assert (updated.json()["priority"], updated.json()["status"]) == ("best_effort", "suspended")
    assert api.client.patch("/tenants/acme", json={"status": "active"}).json()["priority"] == (
        "best_effort")  # a field left out keeps its value
    assert api.store.get_tenant("acme").status == "active"


# API keys


def test_a_key_is_shown_once_then_only_as_metadata(api: Api) -> None:
    api.client.post("/tenants", json={"name": "acme"})
    expires = api.clock.now + timedelta(days=30)
    created = api.client.post("/tenants/acme/keys", json={"expires_at": iso(expires)})
    assert created.status_code == 201
    key = created.json()
    assert key["key"].startswith("afk_") and key["prefix"] == key["key"][:12]
    assert (key["object"], key["tenant"], key["scope"], key["status"]) == (
        "api_key", "acme", "inference", "active")
    assert (key["expires_at"], key["revoked_at"]) == (iso(expires), None)
    assert api.store.authenticate(key["key"]).tenant == "acme"

    listed = api.client.get("/tenants/acme/keys")
    assert key["key"] not in listed.text and "hash" not in listed.text
    assert listed.json()["data"] == [{k: v for k, v in key.items() if k != "key"}]


def test_an_admin_key_made_through_the_api_works_on_the_api(api: Api) -> None:
    key = api.client.post("/tenants/admin/keys", json={"scope": "admin"}).json()
    assert key["scope"] == "admin" and key["expires_at"] is None
    with api.as_key(key["key"]) as second_admin:
        assert second_admin.get("/tenants").status_code == 200


def test_another_tenants_admin_key_administers_that_tenant_only(api: Api) -> None:
    """Admin scope on a customer's tenant is no platform admin: before, any tenant's
    admin-scoped key could read and change every tenant."""
    api.client.post("/tenants", json={"name": "ops"})
    key = api.client.post("/tenants/ops/keys", json={"scope": "admin"}).json()
    with api.as_key(key["key"]) as ops:
        for method, path in (("GET", "/tenants"), ("POST", "/tenants/ops/keys"),
                             ("GET", "/usage.csv")):
            refused = ops.request(method, path, json={} if method == "POST" else None)
            assert refused.status_code == 403, (path, refused.text)
            assert "administers tenant 'ops' only" in refused.json()["error"]["message"]


def test_a_revoked_key_stays_revoked(api: Api) -> None:
    api.client.post("/tenants", json={"name": "acme"})
    key = api.client.post("/tenants/acme/keys", json={}).json()
    revoked = api.client.delete(f"/keys/{key['id']}")
    assert revoked.status_code == 200
    assert (revoked.json()["status"], revoked.json()["revoked_at"]) == ("revoked",
                                                                        iso(api.clock.now))
    assert "key" not in revoked.json()
    api.clock.advance(hours=1)
    again = api.client.delete(f"/keys/{key['id']}").json()
    assert again["revoked_at"] == revoked.json()["revoked_at"]  # the first revocation stands
    assert api.client.get("/tenants/acme/keys").json()["data"][0]["status"] == "revoked"


def test_a_key_past_its_expiry_is_listed_as_expired(api: Api) -> None:
    api.client.post("/tenants", json={"name": "acme"})
    api.client.post("/tenants/acme/keys", json={"expires_at": iso(api.clock.now
                                                                  + timedelta(hours=1))})
    api.clock.advance(hours=1)  # exactly at expires_at: no longer usable
    assert api.client.get("/tenants/acme/keys").json()["data"][0]["status"] == "expired"


# Endpoints and grants


def test_endpoints_owned_shared_granted_and_deleted(api: Api) -> None:
    for name in ("acme", "beta"):
        api.client.post("/tenants", json={"name": name})
    owned = api.client.post("/endpoints", json={"name": "acme-llama", "owner": "acme"})
    assert owned.status_code == 201
    assert owned.json() == {"object": "endpoint", "name": "acme-llama", "owner": "acme",
                            "shared": False, "grants": [], "created_at": iso(api.clock.now),
                            "deployment": None}
    shared = api.client.post("/endpoints", json={"name": "llama"}).json()
    assert (shared["owner"], shared["shared"]) == (None, True)

    granted = api.client.put("/endpoints/llama/grants/beta")
    assert granted.status_code == 200 and granted.json()["grants"] == ["beta"]
    assert api.client.put("/endpoints/llama/grants/acme").json()["grants"] == ["acme", "beta"]
    assert api.client.put("/endpoints/llama/grants/acme").json()["grants"] == [
        "acme", "beta"]  # granting twice is a no-op
    assert api.store.can_use("beta", "llama")
    assert api.client.get("/endpoints/llama").json()["grants"] == ["acme", "beta"]
    assert [e["name"] for e in api.client.get("/endpoints").json()["data"]] == [
        "acme-llama", "llama"]

    assert api.client.delete("/endpoints/llama/grants/beta").json()["grants"] == ["acme"]
    assert not api.store.can_use("beta", "llama")
    deleted = api.client.delete("/endpoints/llama")
    assert deleted.json() == {"object": "endpoint", "name": "llama", "deleted": True}
    assert [e.name for e in api.store.list_endpoints()] == ["acme-llama"]


# Quotas


def test_tenant_quota_is_set_merged_cleared_and_deleted(api: Api) -> None:
    api.client.post("/tenants", json={"name": "acme"})
    unset = api.client.get("/tenants/acme/quota").json()
    assert unset == {"object": "quota", "tenant": "acme", "endpoint": None,
                     "requests_per_minute": None, "tokens_per_minute": None,
                     "concurrent_requests": None, "tokens_per_month": None}

    set_ = api.client.put("/tenants/acme/quota", json={"requests_per_minute": 60,
                                                       "tokens_per_month": 1_000_000})
    assert set_.status_code == 200 and set_.json()["requests_per_minute"] == 60
    # A limit left out keeps its value; null clears one.
    merged = api.client.put("/tenants/acme/quota", json={"tokens_per_minute": 5000,
                                                         "tokens_per_month": None}).json()
    assert [merged[f] for f in ("requests_per_minute", "tokens_per_minute",
                                "concurrent_requests", "tokens_per_month")] == [
        60, 5000, None, None]
    assert api.client.get("/tenants/acme/quota").json() == merged
    assert api.store.get_quota("acme").requests_per_minute == 60

    deleted = api.client.delete("/tenants/acme/quota")
    assert deleted.json() == {"object": "quota", "tenant": "acme", "endpoint": None,
                              "deleted": True}
    assert api.client.get("/tenants/acme/quota").json() == unset


def test_endpoint_quota_needs_access_and_stands_apart(api: Api) -> None:
    api.client.post("/tenants", json={"name": "acme"})
    api.client.post("/endpoints", json={"name": "llama"})
    refused = error_of(api.client.put("/tenants/acme/endpoints/llama/quota",
                                      json={"concurrent_requests": 4}), 400)
    assert "grant it first" in refused["message"]

    api.client.put("/endpoints/llama/grants/acme")
    quota = api.client.put("/tenants/acme/endpoints/llama/quota",
                           json={"concurrent_requests": 4}).json()
    assert (quota["endpoint"], quota["concurrent_requests"]) == ("llama", 4)
    assert api.client.get("/tenants/acme/endpoints/llama/quota").json() == quota
    assert api.client.get("/tenants/acme/quota").json()["concurrent_requests"] is None
    assert api.client.delete("/tenants/acme/endpoints/llama/quota").json()["deleted"] is True
    assert api.store.get_quota("acme", "llama").concurrent_requests is None


# Usage


T0 = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)


def record(request_id: str, tenant: str, at: datetime, prompt: int, completion: int,
           outcome: Outcome = Outcome.OK) -> UsageRecord:
    return UsageRecord(request_id, tenant, "afk_abcdefgh", "llama", prompt, completion, 0.05,
                       0.5, outcome, at, at + timedelta(seconds=1))


@pytest.fixture
def ledger(api: Api) -> Api:
    """acme: two requests at 09:xx and one at 10:xx on 2025-03-14, one the next day; beta one."""
    for name in ("acme", "beta"):
        api.client.post("/tenants", json={"name": name})
    api.store.record_usage([
        record("r1", "acme", T0 + timedelta(minutes=5), 10, 20),
        record("r2", "acme", T0 + timedelta(minutes=50), 5, 0, Outcome.REJECTED),
        record("r3", "acme", T0 + timedelta(hours=1, minutes=1), 7, 3),
        record("r4", "acme", T0 + timedelta(days=1), 1, 1, Outcome.CLIENT_CANCELLED),
        record("r5", "beta", T0 + timedelta(minutes=30), 100, 100),
    ])
    return api


def test_usage_per_hour_and_per_day(ledger: Api) -> None:
    window = {"since": iso(T0), "until": iso(T0 + timedelta(days=2))}
    hourly = ledger.client.get("/tenants/acme/usage", params=window)
    assert hourly.status_code == 200
    body = hourly.json()
    assert (body["object"], body["tenant"], body["by"]) == ("usage", "acme", "hour")
    assert (body["since"], body["until"]) == (window["since"], window["until"])
    assert [(b["start"], b["requests"], b["total_tokens"]) for b in body["buckets"]] == [
        (iso(T0), 2, 35),  # r1 10+20, r2 5+0
        (iso(T0 + timedelta(hours=1)), 1, 10),
        (iso(T0 + timedelta(days=1)), 1, 2),
    ]
    assert body["buckets"][0]["outcomes"] == {"ok": 1, "error": 0, "rejected": 1,
                                              "client_cancelled": 0}
    # 35 + 10 + 2 over the window; prompt 10+5+7+1, completion 20+0+3+1
    assert (body["requests"], body["prompt_tokens"], body["completion_tokens"],
            body["total_tokens"]) == (4, 23, 24, 47)

    daily = ledger.client.get("/tenants/acme/usage", params={**window, "by": "day"}).json()
    assert [(b["start"], b["requests"]) for b in daily["buckets"]] == [
        (iso(T0.replace(hour=0)), 3), (iso(T0.replace(hour=0) + timedelta(days=1)), 1)]


def test_usage_window_defaults_to_the_last_day(ledger: Api) -> None:
    ledger.clock.now = T0 + timedelta(hours=12)
    body = ledger.client.get("/tenants/acme/usage").json()
    assert (body["since"], body["until"]) == (iso(T0 - timedelta(hours=12)),
                                              iso(T0 + timedelta(hours=12)))
    assert body["requests"] == 3


def test_usage_csv_export(ledger: Api) -> None:
    window = {"since": iso(T0), "until": iso(T0 + timedelta(days=2))}
    everyone = ledger.client.get("/usage.csv", params=window)
    assert everyone.status_code == 200
    assert everyone.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(everyone.text)))
    assert [r["request_id"] for r in rows] == ["r1", "r5", "r2", "r3", "r4"]  # oldest first
    assert rows[0] == {
        "request_id": "r1", "tenant": "acme", "key_prefix": "afk_abcdefgh", "endpoint": "llama",
        "prompt_tokens": "10", "completion_tokens": "20", "total_tokens": "30",
        "ttft_s": "0.05", "duration_s": "0.5", "outcome": "ok",
        "created_at": "2025-03-14T09:05:00Z", "finished_at": "2025-03-14T09:05:01Z",
        "client_request_id": "", "http_status": "", "error_class": "", "adapter": ""}

    beta = ledger.client.get("/usage.csv", params={**window, "tenant": "beta"}).text
    assert [r["request_id"] for r in csv.DictReader(io.StringIO(beta))] == ["r5"]
    empty = ledger.client.get("/usage.csv", params={"since": iso(T0 - timedelta(days=9)),
                                                    "until": iso(T0 - timedelta(days=8))})
    assert empty.text.splitlines() == [",".join(rows[0])]  # the header alone


# Who may call: admin keys only


def _every_route() -> list[tuple[str, str, dict | None]]:
    return [
        ("POST", "/tenants", {"name": "newco"}), ("GET", "/tenants", None),
        ("GET", "/tenants/acme", None), ("PATCH", "/tenants/acme", {"priority": "critical"}),
        ("POST", "/tenants/acme/keys", {}), ("GET", "/tenants/acme/keys", None),
        ("DELETE", "/keys/1", None),
        ("POST", "/endpoints", {"name": "newep"}), ("GET", "/endpoints", None),
        ("GET", "/endpoints/llama", None), ("DELETE", "/endpoints/llama", None),
        ("PATCH", "/endpoints/llama/autoscaling", {"max_replicas": 2}),
        ("PUT", "/endpoints/llama/grants/acme", None),
        ("DELETE", "/endpoints/llama/grants/acme", None),
        ("PUT", "/tenants/acme/quota", {"requests_per_minute": 1}),
        ("GET", "/tenants/acme/quota", None), ("DELETE", "/tenants/acme/quota", None),
        ("PUT", "/tenants/acme/endpoints/llama/quota", {"requests_per_minute": 1}),
        ("GET", "/tenants/acme/endpoints/llama/quota", None),
        ("DELETE", "/tenants/acme/endpoints/llama/quota", None),
        ("GET", "/tenants/acme/usage", None), ("GET", "/usage.csv", None),
        ("GET", "/tenants/acme/sla", None), ("GET", "/audit", None),
        ("GET", "/batches", None), ("GET", "/batches/batch_" + "0" * 32, None),
        ("POST", "/batches/batch_" + "0" * 32 + "/cancel", None),
        ("POST", "/models", {"name": "m", "path": "/tmp"}), ("GET", "/models", None),
        ("GET", "/models/m", None), ("DELETE", "/models/m", None),
        ("POST", "/adapters", {"name": "a", "endpoint": "llama", "path": "/tmp",
                               "tenant": "acme"}),
        ("GET", "/adapters", None), ("GET", "/adapters/a", None),
        ("DELETE", "/adapters/a", None),
    ]


def test_every_route_is_listed_in_the_auth_table() -> None:
    routes = {(method, route.path) for route in build_admin_router(Store("sqlite://")).routes
              for method in route.methods}
    assert len(routes) == len(_every_route())


def _credentials(api: Api, case: str) -> str | None:
    """The key a caller presents in each case; the setup leaves one of each in the store."""
    store, now = api.store, api.clock.now
    if case == "missing":
        return None
    if case == "malformed":
        return "sk-not-ours"
    if case == "unknown":
        return "afk_" + "A" * 32
    if case == "revoked":
        revoked = store.create_key("admin", scope=KeyScope.ADMIN)
        store.revoke_key(revoked.key.id)
        return revoked.plaintext
    if case == "expired":
        expiring = store.create_key("admin", scope=KeyScope.ADMIN,
                                    expires_at=now + timedelta(minutes=1))
        api.clock.advance(minutes=2)
        return expiring.plaintext
    if case == "inference":
        return store.create_key("acme").plaintext
    store.create_tenant("frozen")
    key = store.create_key("frozen", scope=KeyScope.ADMIN).plaintext
    store.update_tenant("frozen", status="suspended")
    return key


@pytest.mark.parametrize(("case", "status", "kind"), [
    ("missing", 401, "authentication_error"),
    ("malformed", 401, "authentication_error"),
    ("unknown", 401, "authentication_error"),
    ("revoked", 401, "authentication_error"),
    ("expired", 401, "authentication_error"),
    ("inference", 403, "permission_error"),  # a valid key, but not admin-scoped
    ("suspended", 403, "permission_error"),  # an admin key of a suspended tenant
])
def test_only_admin_keys_may_call_any_route(api: Api, case: str, status: int,
                                            kind: str) -> None:
    api.store.create_tenant("acme")
    api.store.create_endpoint("llama")
    key = _credentials(api, case)
    before = api.snapshot()
    with api.as_key(key) as caller:
        for method, path, body in _every_route():
            error = error_of(caller.request(method, path, json=body), status)
            assert error["type"] == kind, (method, path)
    assert api.snapshot() == before


def test_a_refused_key_is_told_how_to_authenticate(api: Api) -> None:
    with api.as_key(None) as anonymous:
        refused = anonymous.get("/tenants")
    assert refused.headers["www-authenticate"] == "Bearer"
    assert error_of(refused, 401)["code"] == "invalid_api_key"


# Bad input: a clear 4xx, and nothing changed


SQL_NAME = "acme'; DROP TABLE tenants; --"
BAD_REQUESTS = [
    # (method, path, JSON body or raw bytes, status, words the message contains)
    ("POST", "/tenants", {"name": "acme"}, 409, "tenant 'acme' exists"),
    ("POST", "/tenants", {"name": "Acme"}, 400, "name: must match"),
    ("POST", "/tenants", {"name": SQL_NAME}, 400, "name: must match"),
    ("POST", "/tenants", {"name": "a" * 64}, 400, "name: must match"),
    ("POST", "/tenants", {"name": "a" * 5000}, 400, "name: must match"),
    ("POST", "/tenants", {"name": "a" * 100_000}, 413, "larger than 65536 bytes"),
    ("POST", "/tenants", {"name": "newco", "priority": "urgent"}, 400, "body.priority"),
    ("POST", "/tenants", {"name": "newco", "owner": "x"}, 400, "body.owner: Extra inputs"),
    ("POST", "/tenants", {"name": 5}, 400, "body.name: Input should be a valid string"),
    ("POST", "/tenants", {}, 400, "body.name: Field required"),
    ("POST", "/tenants", b'{"name": "newco"', 400, "not valid JSON"),
    ("POST", "/tenants", b'["newco"]', 400, "must be a JSON object"),
    ("POST", "/tenants", None, 400, "body: Field required"),
    ("GET", "/tenants/ghost", None, 404, "no tenant named 'ghost'"),
    ("GET", "/tenants/" + "a" * 1000, None, 400, "tenant: must match"),
    ("PATCH", "/tenants/acme", {"status": "deleted"}, 400, "body.status"),
    ("PATCH", "/tenants/ghost", {"priority": "critical"}, 404, "no tenant named 'ghost'"),
    ("PATCH", "/tenants/admin", {"status": "suspended"}, 400, "holds the admin key"),
    ("POST", "/tenants/ghost/keys", {}, 404, "no tenant named 'ghost'"),
    ("POST", "/tenants/acme/keys", {"scope": "root"}, 400, "body.scope"),
    ("POST", "/tenants/acme/keys", {"expires_at": "2001-01-01T00:00:00Z"}, 400,
     "expires_at: must be in the future"),
    ("POST", "/tenants/acme/keys", {"expires_at": "2999-01-01T00:00:00"}, 400,
     "body.expires_at: Input should have timezone info"),
    ("POST", "/tenants/acme/keys", {"expires_at": "soon"}, 400, "body.expires_at"),
    ("GET", "/tenants/ghost/keys", None, 404, "no tenant named 'ghost'"),
    ("GET", "/tenants/acme%27%3B%20DROP%20TABLE%20tenants/keys", None, 400, "tenant: must match"),
    ("DELETE", "/keys/999", None, 404, "no API key with id 999"),
    ("DELETE", "/keys/abc", None, 400, "path.key_id"),
    ("DELETE", "/keys/-1", None, 400, "key_id: must be a non-negative integer"),
    ("DELETE", f"/keys/{2**40}", None, 404, f"no API key with id {2**40}"),
    ("DELETE", "/keys/" + "9" * 30, None, 400, "key_id: must be a non-negative integer"),
    ("POST", "/endpoints", {"name": "llama"}, 409, "endpoint 'llama' exists"),
    ("POST", "/endpoints", {"name": "newep", "owner": "ghost"}, 404, "no tenant named 'ghost'"),
    ("POST", "/endpoints", {"name": "Bad Name"}, 400, "name: must match"),
    ("GET", "/endpoints/ghost", None, 404, "no endpoint named 'ghost'"),
    ("DELETE", "/endpoints/ghost", None, 404, "no endpoint named 'ghost'"),
    ("PUT", "/endpoints/llama/grants/ghost", None, 404, "no tenant named 'ghost'"),
    ("PUT", "/endpoints/ghost/grants/acme", None, 404, "no endpoint named 'ghost'"),
    ("PUT", "/endpoints/acme-llama/grants/beta", None, 400, "only shared endpoints take grants"),
    ("DELETE", "/endpoints/llama/grants/beta", None, 404, "has no grant"),
    ("PUT", "/tenants/acme/quota", {"requests_per_minute": 0}, 400,
     "requests_per_minute: must be an integer in [1, 10000000]"),
    ("PUT", "/tenants/acme/quota", {"tokens_per_month": 10**16}, 400, "tokens_per_month"),
    ("PUT", "/tenants/acme/quota", {"concurrent_requests": -1}, 400, "concurrent_requests"),
    ("PUT", "/tenants/acme/quota", {"concurrent_requests": "5"}, 400, "valid integer"),
    ("PUT", "/tenants/acme/quota", {"requests_per_minute": 1.5}, 400, "valid integer"),
    ("PUT", "/tenants/acme/quota", {"requests_per_minute": True}, 400, "valid integer"),
    ("PUT", "/tenants/acme/quota", {"rpm": 5}, 400, "body.rpm: Extra inputs"),
    ("PUT", "/tenants/ghost/quota", {"requests_per_minute": 5}, 404, "no tenant named 'ghost'"),
    ("PUT", "/tenants/beta/endpoints/llama/quota", {"requests_per_minute": 5}, 400,
     "grant it first"),
    ("PUT", "/tenants/acme/endpoints/ghost/quota", {"requests_per_minute": 5}, 404,
     "no endpoint named 'ghost'"),
    ("GET", "/tenants/acme/endpoints/ghost/quota", None, 404, "no endpoint named 'ghost'"),
    ("DELETE", "/tenants/beta/quota", None, 404, "tenant 'beta' has no quota"),
    ("DELETE", "/tenants/acme/endpoints/llama/quota", None, 404, "has no quota on endpoint"),
    ("GET", "/tenants/ghost/usage", None, 404, "no tenant named 'ghost'"),
    ("GET", "/tenants/acme/usage?by=week", None, 400, "query.by"),
    ("GET", "/tenants/acme/usage?since=2025-03-14T00:00:00", None, 400, "timezone"),
    ("GET", "/tenants/acme/usage?since=2025-03-15T00:00:00Z&until=2025-03-14T00:00:00Z", None,
     400, "until: must be after since"),
    ("GET", "/usage.csv?since=2999-01-01T00:00:00Z", None, 400, "until: must be after since"),
    ("GET", "/tenants/acme/usage?tenant=beta", None, 400, "query.tenant: Extra inputs"),
    ("GET", "/usage.csv?tenant=ghost", None, 404, "no tenant named 'ghost'"),
    ("GET", "/usage.csv?tenant=BAD", None, 400, "tenant: must match"),
]


def test_bad_input_is_refused_and_changes_nothing(api: Api) -> None:
    """Every row of BAD_REQUESTS against one store: each refusal must leave it as it was, so
    the rows can share their setup."""
    for name in ("acme", "beta"):
        api.store.create_tenant(name)
    api.store.create_endpoint("llama")
    api.store.create_endpoint("acme-llama", owner="acme")
    api.store.grant("llama", "acme")
    api.store.set_quota("acme", requests_per_minute=10)
    before = api.snapshot()
    failures = []
    for method, path, body, status, words in BAD_REQUESTS:
        if isinstance(body, bytes):
            response = api.client.request(method, path, content=body,
                                          headers={"content-type": "application/json"})
        else:
            response = api.client.request(method, path, json=body)
        try:
            error = error_of(response, status)
            assert words in error["message"], error["message"]
            assert len(error["message"]) < 400  # an oversized input is not echoed back whole
            assert error["type"] == "invalid_request_error"
            assert api.snapshot() == before, "the store changed"
        except AssertionError as exc:
            failures.append(f"{method} {path[:60]} {str(body)[:60]}: {exc}")
    assert not failures, "\n".join(failures)


def test_bad_input_names_the_field(api: Api) -> None:
    api.store.create_tenant("acme")
    error = error_of(api.client.put("/tenants/acme/quota", json={"tokens_per_minute": 0}), 400)
    assert (error["param"], error["code"]) == ("tokens_per_minute", "invalid_value")
    error = error_of(api.client.post("/tenants", json={"name": "newco", "priority": 1}), 400)
    assert error["param"] == "priority"


# The router in any app


def test_a_lost_database_is_a_503(live_server: LiveServer) -> None:
    lost = Store("postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2")
    app = FastAPI()
    app.include_router(build_admin_router(lost), prefix="/admin/v1")
    live_server.app = app
    try:
        response = httpx.get(f"{live_server.url}/admin/v1/tenants", timeout=10,
                             headers={"Authorization": "Bearer afk_" + "A" * 32})
        assert error_of(response, 503)["type"] == "service_unavailable_error"
    finally:
        live_server.app = None
        lost.close()


class BrokenStore(Store):
    """Lets its admin in, then fails the way a bug would."""

    def authenticate(self, plaintext: str) -> Principal:
        return Principal("admin", PriorityClass.CRITICAL, plaintext[:12], KeyScope.ADMIN)

    def list_tenants(self) -> list:
        raise RuntimeError("a bug")


def test_an_unexpected_failure_is_an_openai_shaped_500(live_server: LiveServer) -> None:
    app = FastAPI()
    app.include_router(build_admin_router(BrokenStore("sqlite://")), prefix="/admin/v1")
    live_server.app = app
    try:
        response = httpx.get(f"{live_server.url}/admin/v1/tenants", timeout=10,
                             headers={"Authorization": "Bearer afk_" + "A" * 32})
        assert error_of(response, 500)["message"] == (
            "the admin API failed; the server log has details")
    finally:
        live_server.app = None


def test_the_openapi_schema_describes_the_routes() -> None:
    app = FastAPI()
    app.include_router(build_admin_router(Store("sqlite://")), prefix="/admin/v1")
    schema = app.openapi()
    assert "/admin/v1/tenants/{name}/keys" in schema["paths"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_a_deployment_is_refused_where_no_deployer_is_wired(api) -> None:
    """Served without the platform's deployer (as here), the admin API registers endpoints
    only: one asked to be deployed is refused, and nothing is written."""
    refused = api.client.post("/endpoints", json={
        "name": "popup", "deployment": {"model": "builtin:demo"}})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].startswith("deployment: this platform does not")
    assert api.client.get("/endpoints/popup").status_code == 404
