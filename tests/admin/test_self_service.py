"""Tenant self-service over real HTTP on SQLite and PostgreSQL: a tenant's own endpoints,
quota and usage, read with its own keys, and nothing of any other tenant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx
import pytest

from serving.tenancy import KeyScope, Outcome, TenantStatus, UsageRecord
from tests.admin.test_api import error_of, iso

if TYPE_CHECKING:
    from tests.admin.conftest import Api

T0 = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)


@pytest.fixture
def acme(api: Api) -> httpx.Client:
    """acme owns `llama` and is granted the shared `granite`; beta owns `mixtral`; nobody is
    granted the shared `falcon`. Returns a client with acme's inference key."""
    store = api.store
    for name in ("acme", "beta"):
        store.create_tenant(name)
    store.create_endpoint("llama", owner="acme")
    store.create_endpoint("mixtral", owner="beta")
    for name in ("granite", "falcon"):
        store.create_endpoint(name)
    store.grant("granite", "acme")
    store.grant("granite", "beta")
    key = store.create_key("acme").plaintext
    with httpx.Client(base_url=f"{api.url}/tenant/v1", timeout=10,
                      headers={"Authorization": f"Bearer {key}"}) as client:
        yield client


def test_a_tenant_sees_its_own_and_granted_endpoints_with_its_quota_there(
        api: Api, acme: httpx.Client) -> None:
    api.store.set_quota("acme", "llama", requests_per_minute=10, tokens_per_minute=5000)
    api.store.set_quota("beta", "granite", requests_per_minute=1)
    resp = acme.get("/endpoints")
    assert resp.status_code == 200
    body = resp.json()
    assert body["object"] == "list"
    assert [(e["name"], e["shared"]) for e in body["data"]] == [("granite", True),
                                                                ("llama", False)]
    granite, llama = body["data"]
    assert (llama["quota"]["requests_per_minute"], llama["quota"]["tokens_per_minute"]) == (
        10, 5000)
    assert granite["quota"] == {"object": "quota", "tenant": "acme", "endpoint": "granite",
                                "requests_per_minute": None, "tokens_per_minute": None,
                                "concurrent_requests": None, "tokens_per_month": None}
    assert "beta" not in resp.text  # neither beta's grant nor its quota on granite shows


def test_a_tenant_reads_its_own_quota(api: Api, acme: httpx.Client) -> None:
    assert acme.get("/quota").json()["requests_per_minute"] is None
    api.store.set_quota("acme", requests_per_minute=600, tokens_per_month=50_000_000)
    api.store.set_quota("beta", requests_per_minute=1)
    quota = acme.get("/quota").json()
    assert (quota["tenant"], quota["endpoint"]) == ("acme", None)
    assert (quota["requests_per_minute"], quota["tokens_per_month"]) == (600, 50_000_000)


def _record(request_id: str, tenant: str, at: datetime, prompt: int, completion: int,
            outcome: Outcome = Outcome.OK) -> UsageRecord:
    return UsageRecord(request_id, tenant, "afk_abcdefgh", "llama", prompt, completion, 0.05,
                       0.5, outcome, at, at + timedelta(seconds=1))


def test_a_tenant_reads_its_own_usage_by_day(api: Api, acme: httpx.Client) -> None:
    api.store.record_usage([
        _record("r1", "acme", T0, 10, 20),
        _record("r2", "acme", T0 + timedelta(hours=3), 5, 0, Outcome.REJECTED),
        _record("r3", "acme", T0 + timedelta(days=1), 7, 3),
        _record("r4", "beta", T0, 100, 100),
    ])
    window = {"since": iso(T0 - timedelta(hours=9)), "until": iso(T0 + timedelta(days=2)),
              "by": "day"}
    mine = acme.get("/usage", params=window)
    assert mine.status_code == 200
    body = mine.json()
    assert (body["object"], body["tenant"], body["by"]) == ("usage", "acme", "day")
    assert [(b["start"], b["requests"], b["total_tokens"]) for b in body["buckets"]] == [
        (iso(T0.replace(hour=0)), 2, 35),  # r1 10+20, r2 5+0
        (iso(T0.replace(hour=0) + timedelta(days=1)), 1, 10),
    ]
    assert body["buckets"][0]["outcomes"]["rejected"] == 1
    # the same report the admin API gives for acme
    assert body == api.client.get("/tenants/acme/usage", params=window).json()


def test_the_usage_window_defaults_to_the_last_day(api: Api, acme: httpx.Client) -> None:
    api.store.record_usage([_record("r1", "acme", T0, 1, 1),
                            _record("r2", "acme", T0 - timedelta(days=2), 1, 1)])
    api.clock.now = T0 + timedelta(hours=12)
    body = acme.get("/usage").json()
    assert (body["since"], body["until"], body["by"]) == (
        iso(T0 - timedelta(hours=12)), iso(T0 + timedelta(hours=12)), "hour")
    assert body["requests"] == 1


def test_an_admin_scoped_key_reads_its_own_tenant(api: Api, acme: httpx.Client) -> None:
    ops_key = api.store.create_key("beta", scope=KeyScope.ADMIN).plaintext
    with httpx.Client(base_url=f"{api.url}/tenant/v1", timeout=10,
                      headers={"Authorization": f"Bearer {ops_key}"}) as beta:
        assert [e["name"] for e in beta.get("/endpoints").json()["data"]] == ["granite",
                                                                              "mixtral"]
        assert beta.get("/usage").json()["tenant"] == "beta"


@pytest.mark.parametrize(("key", "status", "kind"), [
    (None, 401, "authentication_error"),
    ("sk-not-ours", 401, "authentication_error"),
    ("afk_" + "A" * 32, 401, "authentication_error"),
    ("revoked", 401, "authentication_error"),
    ("suspended", 403, "permission_error"),
])
def test_a_refused_key_reads_nothing(api: Api, acme: httpx.Client, key: str | None,
                                     status: int, kind: str) -> None:
    if key == "revoked":
        created = api.store.create_key("acme")
        api.store.revoke_key(created.key.id)
        key = created.plaintext
    elif key == "suspended":
        key = api.store.create_key("beta").plaintext
        api.store.update_tenant("beta", status=TenantStatus.SUSPENDED)
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    for path in ("/endpoints", "/quota", "/usage"):
        error = error_of(httpx.get(f"{api.url}/tenant/v1{path}", headers=headers, timeout=10),
                         status)
        assert error["type"] == kind, path
        if status == 401:
            assert "pass one of your tenant's keys" in error["message"]


@pytest.mark.parametrize(("query", "names"), [
    ("by=week", "query.by"),
    ("since=2025-03-14T00:00:00", "timezone"),
    ("since=2025-03-15T00:00:00Z&until=2025-03-14T00:00:00Z", "until: must be after since"),
    ("tenant=beta", "query.tenant: Extra inputs"),  # no reading another tenant's usage
])
def test_bad_usage_queries_are_400_naming_the_field(acme: httpx.Client, query: str,
                                                    names: str) -> None:
    error = error_of(acme.get(f"/usage?{query}"), 400)
    assert names in error["message"]
