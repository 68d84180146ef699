"""The audit log over real HTTP on SQLite and PostgreSQL: every admin write is one entry saying
who, what, when and from where; a created key never reaches it; pages, filters and bad
queries; platform admins read it all, a tenant's admin only the entries about its tenant."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from serving.admin import build_admin_router
from serving.tenancy import Conflict, KeyScope, keys
from tests.admin.conftest import LiveServer
from tests.admin.test_api import error_of, iso

if TYPE_CHECKING:
    from tests.admin.conftest import Api

ANY = object()  # an expected value this test does not pin (a key's random prefix)
UNLIMITED = {"requests_per_minute": None, "tokens_per_minute": None,
             "concurrent_requests": None, "tokens_per_month": None}


def audit_log(client: httpx.Client, path: str = "/audit", **params: Any) -> dict:
    reply = client.get(path, params=params)
    assert reply.status_code == 200, reply.text
    return reply.json()


def matches(actual: object, expected: object, *, subset: bool = True) -> bool:
    """The entry has the fields given (nested objects exactly), ANY standing for any value."""
    if expected is ANY:
        return True
    if not isinstance(expected, dict):
        return actual == expected
    if not isinstance(actual, dict) or not (set(expected) <= set(actual) if subset
                                            else set(expected) == set(actual)):
        return False
    return all(matches(actual[k], v, subset=False) for k, v in expected.items())


# Who did what, when, from where: one entry per write

WRITES: list[tuple[str, str, dict | None, dict]] = [
    # (method, path, body, the one entry it makes)
    ("POST", "/tenants", {"name": "acme", "slo": {"ttft_p95_ms": 900}},
     {"action": "tenant.create", "target": "tenant/acme", "tenant": "acme", "before": None,
      "after": {"priority": "standard", "status": "active", "slo_ttft_p95_ms": 900,
                "slo_itl_p95_ms": None, "slo_objective": None}}),
    ("POST", "/tenants", {"name": "beta"}, {"action": "tenant.create", "target": "tenant/beta"}),
    ("PATCH", "/tenants/acme", {"status": "suspended", "slo": {"objective": 0.95}},
     {"action": "tenant.update", "target": "tenant/acme",
      "before": {"status": "active", "slo_objective": None},
      "after": {"status": "suspended", "slo_objective": 0.95}}),
    ("POST", "/tenants/acme/keys", {"scope": "admin"},
     {"action": "key.create", "target": "key/2", "tenant": "acme", "before": None,
      "after": {"prefix": ANY, "scope": "admin", "expires_at": None, "revoked_at": None}}),
    ("DELETE", "/keys/2", None,
     {"action": "key.revoke", "target": "key/2", "tenant": "acme",
      "before": {"revoked_at": None}, "after": ANY}),
    ("POST", "/endpoints", {"name": "llama"},
     {"action": "endpoint.create", "target": "endpoint/llama", "tenant": None,
      "after": {"owner": None, "deployment": None}}),
    ("POST", "/endpoints", {"name": "acme-llama", "owner": "acme"},
     {"action": "endpoint.create", "target": "endpoint/acme-llama", "tenant": "acme"}),
    ("PUT", "/endpoints/llama/grants/beta", None,
     {"action": "grant.create", "target": "endpoint/llama/grant/beta", "tenant": "beta",
      "before": None, "after": {"endpoint": "llama", "tenant": "beta"}}),
    ("PUT", "/tenants/beta/quota", {"requests_per_minute": 60},
     {"action": "quota.set", "target": "tenant/beta/quota", "tenant": "beta", "before": None,
      "after": {**UNLIMITED, "requests_per_minute": 60}}),
    # limits left out keep their values: only the one given changes
    ("PUT", "/tenants/beta/quota", {"tokens_per_minute": 5000},
     {"action": "quota.set", "before": {"tokens_per_minute": None},
      "after": {"tokens_per_minute": 5000}}),
    ("PUT", "/tenants/beta/endpoints/llama/quota", {"concurrent_requests": 2},
     {"action": "quota.set", "target": "tenant/beta/endpoint/llama/quota", "tenant": "beta"}),
    ("DELETE", "/tenants/beta/endpoints/llama/quota", None,
     {"action": "quota.clear", "target": "tenant/beta/endpoint/llama/quota",
      "before": {**UNLIMITED, "concurrent_requests": 2}, "after": None}),
    ("DELETE", "/tenants/beta/quota", None,
     {"action": "quota.clear", "target": "tenant/beta/quota", "after": None}),
    ("DELETE", "/endpoints/llama/grants/beta", None,
     {"action": "grant.delete", "target": "endpoint/llama/grant/beta", "tenant": "beta",
      "before": {"endpoint": "llama", "tenant": "beta"}, "after": None}),
    ("DELETE", "/endpoints/acme-llama", None,
     {"action": "endpoint.delete", "target": "endpoint/acme-llama", "tenant": "acme",
      "before": {"owner": "acme", "deployment": None, "grants": []}, "after": None}),
]


def test_every_admin_write_is_one_entry_of_who_what_when_where(api: Api) -> None:
    last_id = 0
    for method, path, body, expected in WRITES:
        api.clock.advance(seconds=1)
        reply = api.client.request(method, path, json=body)
        assert reply.status_code < 300, (method, path, reply.text)
        page = audit_log(api.client, after_id=last_id)
        assert len(page["data"]) == 1, (method, path, page["data"])
        [entry] = page["data"]
        assert matches(entry, expected), (method, path, entry)
        assert entry["at"] == iso(api.clock.now)
        assert (entry["actor_tenant"], entry["actor_key_prefix"], entry["actor_scope"],
                entry["source_address"]) == ("admin", api.admin_key[:12], "admin", "127.0.0.1")
        last_id = entry["id"]
    assert [e["id"] for e in audit_log(api.client)["data"]] == list(range(1, len(WRITES) + 1))


def test_reads_record_nothing(api: Api) -> None:
    api.store.create_tenant("acme")
    api.store.create_endpoint("llama", owner="acme")
    for path in ("/tenants", "/tenants/acme", "/tenants/acme/keys", "/endpoints",
                 "/endpoints/llama", "/tenants/acme/quota", "/tenants/acme/usage",
                 "/tenants/acme/sla", "/usage.csv", "/audit"):
        assert api.client.get(path).status_code == 200, path
    assert audit_log(api.client)["data"] == []


@pytest.mark.parametrize(("trusted_proxies", "recorded"), [
    ("192.0.2.1", "127.0.0.1"),  # the peer is no trusted proxy: its header is ignored
    ("127.0.0.1", "203.0.113.9"),  # uvicorn's default: a proxy on loopback is believed
])
def test_the_address_is_the_servers_view_of_the_client(
        api: Api, backend, monkeypatch: pytest.MonkeyPatch, trusted_proxies: str,
        recorded: str) -> None:
    """The route reads no header itself; the server (uvicorn, as under Ray Serve) takes
    X-Forwarded-For only from a peer it trusts as a proxy (FORWARDED_ALLOW_IPS)."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", trusted_proxies)
    server = LiveServer()
    server.app = backend.app
    server.start()
    try:
        reply = httpx.post(f"{server.url}/admin/v1/tenants", json={"name": "acme"}, timeout=10,
                           headers={"Authorization": f"Bearer {api.admin_key}",
                                    "X-Forwarded-For": "203.0.113.9"})
        assert reply.status_code == 201
    finally:
        server.stop()
    [entry] = audit_log(api.client)["data"]
    assert entry["source_address"] == recorded


class FailingDeployer:
    """Accepts a deployment, then fails to deploy it (a model that will not load, say)."""

    async def check(self, name: str, deployment: dict[str, Any]) -> dict[str, Any]:
        return deployment

    async def deploy(self, name: str, deployment: dict[str, Any]) -> None:
        raise Conflict("deployment: no room after all")

    async def remove(self, name: str) -> None:
        pass


def test_an_endpoint_whose_deployment_fails_is_logged_created_then_deleted(
        api: Api, live_server: LiveServer) -> None:
    app = FastAPI()
    app.include_router(build_admin_router(api.store, deployer=FailingDeployer(),
                                          clock=api.clock), prefix="/admin/v1")
    live_server.app = app
    refused = api.client.post("/endpoints", json={"name": "popup",
                                                  "deployment": {"model": "m"}})
    assert refused.status_code == 409
    assert [(e["action"], e["target"]) for e in audit_log(api.client)["data"]] == [
        ("endpoint.create", "endpoint/popup"), ("endpoint.delete", "endpoint/popup")]


# Never a secret


def test_a_key_created_through_the_api_never_reaches_the_audit_log(api: Api) -> None:
    api.client.post("/tenants", json={"name": "acme"})
    created = api.client.post("/tenants/acme/keys", json={"scope": "admin"}).json()
    plaintext, digest = created["key"], keys.key_hash(created["key"])
    with api.store.engine.connect() as conn:
        table = repr(conn.execute(sa.text("SELECT * FROM admin_audit")).all())
    listed = api.client.get("/audit").text  # the CLI's exports: tests/admin/test_audit_cli.py
    for where in (table, listed):
        assert created["prefix"] in where  # the key is there, by its prefix
        assert plaintext not in where and digest not in where
        assert plaintext.removeprefix(created["prefix"]) not in where


# Pages and filters


def test_pages_follow_last_id(api: Api) -> None:
    for n in range(5):
        api.client.post("/tenants", json={"name": f"t{n}"})
    first = audit_log(api.client, limit=2)
    assert [e["target"] for e in first["data"]] == ["tenant/t0", "tenant/t1"]
    assert (first["has_more"], first["last_id"]) == (True, first["data"][-1]["id"])
    second = audit_log(api.client, limit=2, after_id=first["last_id"])
    assert [e["target"] for e in second["data"]] == ["tenant/t2", "tenant/t3"]
    last = audit_log(api.client, limit=2, after_id=second["last_id"])
    assert ([e["target"] for e in last["data"]], last["has_more"]) == (["tenant/t4"], False)
    assert audit_log(api.client, after_id=last["last_id"]) == {
        "object": "list", "data": [], "has_more": False, "last_id": None}
    assert len(audit_log(api.client)["data"]) == 5  # the default page (100) holds them all


def test_filters_by_tenant_and_time(api: Api) -> None:
    start = api.clock.now
    api.client.post("/tenants", json={"name": "acme"})
    api.clock.advance(hours=1)
    api.client.post("/tenants", json={"name": "beta"})
    api.clock.advance(hours=1)
    api.client.put("/tenants/acme/quota", json={"requests_per_minute": 5})
    assert [e["action"] for e in audit_log(api.client, tenant="acme")["data"]] == [
        "tenant.create", "quota.set"]
    window = {"since": iso(start), "until": iso(api.clock.now)}
    in_window = audit_log(api.client, **window)["data"]
    assert [e["target"] for e in in_window] == ["tenant/acme", "tenant/beta"]  # until excluded
    assert audit_log(api.client, tenant="ghost")["data"] == []


@pytest.mark.parametrize(("query", "param", "words"), [
    ("limit=0", "limit", "greater than or equal to 1"),
    ("limit=1001", "limit", "less than or equal to 1000"),
    ("limit=many", "limit", "valid integer"),
    ("after_id=-1", "after_id", "greater than or equal to 0"),
    (f"after_id={2**63}", "after_id", "must be an entry id"),
    ("since=2025-03-14T00:00:00", "since", "timezone"),
    ("since=2025-03-15T00:00:00Z&until=2025-03-14T00:00:00Z", "until", "must be after since"),
    ("tenant=Not%20A%20Name", "tenant", "tenant: must match"),
    ("actor=admin", "actor", "Extra inputs"),
])
def test_a_bad_query_is_400_naming_the_param(api: Api, query: str, param: str,
                                             words: str) -> None:
    error = error_of(api.client.get(f"/audit?{query}"), 400)
    assert error["param"] == param and words in error["message"], error
    assert error["type"] == "invalid_request_error"


# Who may read it


def test_only_a_platform_admin_key_reads_the_audit_log(api: Api) -> None:
    api.store.create_tenant("acme")
    refusals = [(None, 401), (api.store.create_key("acme").plaintext, 403),
                (api.store.create_key("acme", scope=KeyScope.ADMIN).plaintext, 403)]
    for key, status in refusals:
        with api.as_key(key) as caller:
            error_of(caller.get("/audit"), status)


@pytest.fixture
def two_tenants(api: Api) -> tuple[httpx.Client, str]:
    """acme and beta, each changed through the admin API; acme's own admin reads /tenant/v1."""
    for name in ("acme", "beta"):
        api.client.post("/tenants", json={"name": name})
        api.client.put(f"/tenants/{name}/quota", json={"requests_per_minute": 7})
    api.client.post("/endpoints", json={"name": "beta-only", "owner": "beta"})
    acme_admin = api.store.create_key("acme", scope=KeyScope.ADMIN).plaintext
    with httpx.Client(base_url=f"{api.url}/tenant/v1", timeout=10,
                      headers={"Authorization": f"Bearer {acme_admin}"}) as acme:
        yield acme, acme_admin


def test_a_tenant_admin_reads_the_entries_about_its_own_tenant_only(
        api: Api, two_tenants: tuple[httpx.Client, str]) -> None:
    acme, _ = two_tenants
    reply = acme.get("/audit")
    assert reply.status_code == 200
    assert [(e["action"], e["target"]) for e in reply.json()["data"]] == [
        ("tenant.create", "tenant/acme"), ("quota.set", "tenant/acme/quota")]
    assert "beta" not in reply.text
    # the platform's operators show as who they are, not by key or address
    assert {(e["actor_tenant"], e["actor_scope"], e["actor_key_prefix"], e["source_address"])
            for e in reply.json()["data"]} == {("admin", "admin", "", None)}
    assert api.admin_key[:12] not in reply.text
    page = acme.get("/audit", params={"limit": 1}).json()
    assert page["has_more"] and len(page["data"]) == 1


def test_a_tenant_cannot_ask_for_another_tenants_entries(
        api: Api, two_tenants: tuple[httpx.Client, str]) -> None:
    acme, _ = two_tenants
    error = error_of(acme.get("/audit", params={"tenant": "beta"}), 400)
    assert error["param"] == "tenant" and "beta" not in error["message"]
    inference = api.store.create_key("acme").plaintext
    refused = httpx.get(f"{api.url}/tenant/v1/audit", timeout=10,
                        headers={"Authorization": f"Bearer {inference}"})
    assert "admin-scoped" in error_of(refused, 403)["message"]
    assert error_of(httpx.get(f"{api.url}/tenant/v1/audit", timeout=10), 401)


# The SDK


def test_the_sdk_reads_the_audit_log_typed(api: Api,
                                           two_tenants: tuple[httpx.Client, str]) -> None:
    from aifactory_sdk import Client

    _, acme_admin = two_tenants
    with Client(api_key=api.admin_key, base_url=api.url, max_retries=0) as ops:
        page = ops.admin.audit(tenant="beta", limit=2)
        assert [(e.action, e.target) for e in page.data] == [
            ("tenant.create", "tenant/beta"), ("quota.set", "tenant/beta/quota")]
        assert page.has_more and page.last_id == page.data[-1].id
        rest = ops.admin.audit(tenant="beta", after_id=page.last_id)
        assert [e.target for e in rest.data] == ["endpoint/beta-only"]
        assert rest.data[0].after == {"owner": "beta", "deployment": None}
    with Client(api_key=acme_admin, base_url=api.url, max_retries=0) as acme:
        assert {e.tenant for e in acme.tenant.audit().data} == {"acme"}
