"""The store on SQLite and PostgreSQL: tenants, the key lifecycle, endpoints and grants, quotas."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from serving.tenancy import (
    Conflict,
    Forbidden,
    Invalid,
    KeyScope,
    Limits,
    NotFound,
    PriorityClass,
    Quota,
    Store,
    TenantStatus,
    Unauthenticated,
)

if TYPE_CHECKING:
    from tests.tenancy.conftest import Clock

BAD_NAMES = [
    "",
    "Acme",  # upper case
    "-acme",  # must start with a letter or digit
    ".acme",
    "a" * 64,  # one over 63
    "acme\n",  # a trailing newline must not slip past "$"
    "acme corp",
    "acme'; DROP TABLE tenants; --",
    "x" * 100_000,
    "ümlaut",
    123,
    None,
]


def snapshot(store: Store) -> tuple:
    """Everything the store holds that a refused write could have touched."""
    tenants = store.list_tenants()
    return (tenants, store.list_endpoints(),
            [store.list_keys(t.name) for t in tenants],
            [store.get_quota(t.name) for t in tenants])


# Tenants


def test_tenants_are_created_listed_and_updated(store: Store, clock: Clock) -> None:
    acme = store.create_tenant("acme")
    assert (acme.name, acme.priority, acme.status) == ("acme", PriorityClass.STANDARD,
                                                       TenantStatus.ACTIVE)
    assert acme.created_at == clock.now
    store.create_tenant("beta.labs_2", priority="critical")
    assert [t.name for t in store.list_tenants()] == ["acme", "beta.labs_2"]
    updated = store.update_tenant("acme", priority=PriorityClass.BEST_EFFORT, status="suspended")
    assert (updated.priority, updated.status) == (PriorityClass.BEST_EFFORT,
                                                  TenantStatus.SUSPENDED)
    assert store.get_tenant("acme") == updated


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n)[:20])
def test_malformed_names_are_refused_before_sql(store: Store, name: object) -> None:
    store.create_tenant("acme")
    before = snapshot(store)
    with pytest.raises(Invalid) as refused:
        store.create_tenant(name)  # type: ignore[arg-type]
    assert refused.value.field == "name"
    assert len(str(refused.value)) < 200  # an oversized input is not echoed whole
    with pytest.raises(Invalid):
        store.create_endpoint(name)  # type: ignore[arg-type]
    assert snapshot(store) == before


def test_duplicate_tenant_is_a_conflict_and_changes_nothing(store: Store) -> None:
    store.create_tenant("acme", priority="critical")
    before = snapshot(store)
    with pytest.raises(Conflict, match="name: tenant 'acme' exists"):
        store.create_tenant("acme", priority="best_effort")
    assert snapshot(store) == before


@pytest.mark.parametrize(("field", "value", "message"), [
    ("priority", "urgent", "priority: must be one of critical|standard|best_effort, got 'urgent'"),
    ("status", "deleted", "status: must be one of active|suspended, got 'deleted'"),
])
def test_bad_enum_values_name_their_field(store: Store, field: str, value: str,
                                          message: str) -> None:
    store.create_tenant("acme")
    before = snapshot(store)
    with pytest.raises(Invalid) as refused:
        store.update_tenant("acme", **{field: value})
    assert (refused.value.field, str(refused.value)) == (field, message)
    assert snapshot(store) == before


def test_unknown_tenant_is_not_found(store: Store) -> None:
    for call in (lambda: store.get_tenant("ghost"), lambda: store.create_key("ghost"),
                 lambda: store.set_quota("ghost", requests_per_minute=1),
                 lambda: store.create_endpoint("llama", owner="ghost")):
        with pytest.raises(NotFound, match="tenant: no tenant named 'ghost'"):
            call()
    assert store.list_endpoints() == []


# API keys


def test_a_key_is_shown_once_and_stored_only_as_a_hash(store: Store, database_url: str) -> None:
    store.create_tenant("acme")
    created = store.create_key("acme")
    assert created.plaintext.startswith("afk_") and len(created.plaintext) == 36
    assert created.key.prefix == created.plaintext[:12]
    assert created.key.scope is KeyScope.INFERENCE
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        stored = [str(value) for row in conn.execute(sa.text("SELECT * FROM api_keys"))
                  for value in row]
    engine.dispose()
    assert not any(created.plaintext in value for value in stored)
    assert store.list_keys("acme") == [created.key]  # a record with no key and no hash
    assert not hasattr(created.key, "key_hash")


def test_keys_are_random(store: Store) -> None:
    store.create_tenant("acme")
    plaintexts = {store.create_key("acme").plaintext for _ in range(20)}
    assert len(plaintexts) == 20


def test_authenticate_finds_the_tenant(store: Store) -> None:
    store.create_tenant("acme", priority="critical")
    created = store.create_key("acme", scope="admin")
    principal = store.authenticate(created.plaintext)
    assert (principal.tenant, principal.priority, principal.key_prefix, principal.scope) == (
        "acme", PriorityClass.CRITICAL, created.key.prefix, KeyScope.ADMIN)


@pytest.mark.parametrize(("presented", "reason"), [
    ("afk_" + "A" * 32, "unknown"),  # well formed, never issued
    ("sk-not-ours", "malformed"),
    ("afk_" + "A" * 31 + "!", "malformed"),
    ("afk_" + "A" * 100_000, "malformed"),  # oversized: refused before hashing
    ("", "malformed"),
])
def test_unknown_or_malformed_keys_are_refused(store: Store, presented: str,
                                               reason: str) -> None:
    store.create_tenant("acme")
    store.create_key("acme")
    with pytest.raises(Unauthenticated) as refused:
        store.authenticate(presented)
    assert refused.value.reason == reason


def test_a_key_expires(store: Store, clock: Clock) -> None:
    store.create_tenant("acme")
    created = store.create_key("acme", expires_at=clock.now + timedelta(hours=1))
    clock.advance(minutes=59, seconds=59)
    assert store.authenticate(created.plaintext).tenant == "acme"
    clock.advance(seconds=1)  # exactly at expires_at: no longer valid
    with pytest.raises(Unauthenticated) as refused:
        store.authenticate(created.plaintext)
    assert refused.value.reason == "expired"


@pytest.mark.parametrize("hours", [0, -1])
def test_a_key_cannot_be_born_expired(store: Store, clock: Clock, hours: int) -> None:
    store.create_tenant("acme")
    with pytest.raises(Invalid) as refused:
        store.create_key("acme", expires_at=clock.now + timedelta(hours=hours))
    assert refused.value.field == "expires_at"
    assert store.list_keys("acme") == []


def test_naive_expiry_is_refused(store: Store, clock: Clock) -> None:
    store.create_tenant("acme")
    with pytest.raises(Invalid, match="expires_at"):
        store.create_key("acme", expires_at=clock.now.replace(tzinfo=None) + timedelta(days=1))


def test_a_revoked_key_stops_working_and_stays_revoked(store: Store, clock: Clock) -> None:
    store.create_tenant("acme")
    kept, revoked = store.create_key("acme"), store.create_key("acme")
    first = store.revoke_key(revoked.key.id)
    assert first.revoked_at == clock.now
    with pytest.raises(Unauthenticated) as refused:
        store.authenticate(revoked.plaintext)
    assert refused.value.reason == "revoked"
    clock.advance(hours=1)
    assert store.revoke_key(revoked.key.id).revoked_at == first.revoked_at  # idempotent
    assert store.authenticate(kept.plaintext).tenant == "acme"
    with pytest.raises(NotFound, match="key_id"):
        store.revoke_key(10_000)


def test_a_suspended_tenant_is_forbidden_until_reactivated(store: Store) -> None:
    store.create_tenant("acme")
    created = store.create_key("acme")
    store.update_tenant("acme", status="suspended")
    with pytest.raises(Forbidden, match="suspended"):
        store.authenticate(created.plaintext)
    store.update_tenant("acme", status="active")
    assert store.authenticate(created.plaintext).tenant == "acme"


def test_keys_of_one_tenant_are_not_another_s(store: Store) -> None:
    store.create_tenant("acme")
    store.create_tenant("beta")
    a, b = store.create_key("acme"), store.create_key("beta")
    assert store.authenticate(b.plaintext).tenant == "beta"
    assert [k.id for k in store.list_keys("acme")] == [a.key.id]


# Endpoints and grants


def test_an_owned_endpoint_serves_only_its_owner(store: Store) -> None:
    store.create_tenant("acme")
    store.create_tenant("beta")
    endpoint = store.create_endpoint("llama-8b", owner="acme")
    assert (endpoint.owner, endpoint.shared, endpoint.grants) == ("acme", False, ())
    assert store.can_use("acme", "llama-8b") and not store.can_use("beta", "llama-8b")
    with pytest.raises(Invalid, match="only shared endpoints take grants"):
        store.grant("llama-8b", "beta")
    assert store.get_endpoint("llama-8b") == endpoint


def test_a_shared_endpoint_serves_the_tenants_granted(store: Store) -> None:
    for name in ("acme", "beta", "gamma"):
        store.create_tenant(name)
    assert store.create_endpoint("qwen").shared
    assert not store.can_use("acme", "qwen")
    store.grant("qwen", "beta")
    assert store.grant("qwen", "acme").grants == ("acme", "beta")
    assert store.grant("qwen", "acme").grants == ("acme", "beta")  # granting twice: a no-op
    assert store.can_use("acme", "qwen") and not store.can_use("gamma", "qwen")
    assert store.revoke_grant("qwen", "acme").grants == ("beta",)
    assert not store.can_use("acme", "qwen")
    with pytest.raises(NotFound, match="no grant"):
        store.revoke_grant("qwen", "acme")


def test_endpoints_usable_by_a_tenant(store: Store) -> None:
    store.create_tenant("acme")
    store.create_tenant("beta")
    store.create_endpoint("own", owner="acme")
    store.create_endpoint("theirs", owner="beta")
    store.create_endpoint("shared-granted")
    store.create_endpoint("shared-not")
    store.grant("shared-granted", "acme")
    assert [e.name for e in store.list_endpoints(usable_by="acme")] == ["own", "shared-granted"]
    assert [e.name for e in store.list_endpoints()] == [
        "own", "shared-granted", "shared-not", "theirs"]


def test_duplicate_and_unknown_endpoints(store: Store) -> None:
    store.create_tenant("acme")
    store.create_endpoint("llama", owner="acme")
    before = snapshot(store)
    with pytest.raises(Conflict, match="name: endpoint 'llama' exists"):
        store.create_endpoint("llama")
    assert snapshot(store) == before
    for call in (lambda: store.get_endpoint("nope"), lambda: store.grant("nope", "acme"),
                 lambda: store.can_use("acme", "nope"), lambda: store.delete_endpoint("nope")):
        with pytest.raises(NotFound, match="endpoint: no endpoint named 'nope'"):
            call()


def test_deleting_an_endpoint_takes_its_grants_and_quotas(store: Store) -> None:
    store.create_tenant("acme")
    store.create_endpoint("qwen")
    store.grant("qwen", "acme")
    store.set_quota("acme", "qwen", requests_per_minute=5)
    store.delete_endpoint("qwen")
    assert store.list_endpoints() == []
    store.create_endpoint("qwen")  # the name is free again, with no grants or quota
    assert not store.can_use("acme", "qwen")
    assert store.get_quota("acme", "qwen") == Quota("acme", "qwen")


# Quotas


def test_quotas_per_tenant_and_per_endpoint(store: Store) -> None:
    store.create_tenant("acme")
    store.create_endpoint("llama", owner="acme")
    assert store.get_quota("acme") == Quota("acme", None)  # nothing set: unlimited
    store.set_quota("acme", requests_per_minute=600, tokens_per_minute=100_000,
                    concurrent_requests=32, tokens_per_month=10**9)
    store.set_quota("acme", "llama", requests_per_minute=60)
    assert store.limits_for("acme", "llama") == (
        Limits(600, 100_000, 32, 10**9), Limits(requests_per_minute=60))
    # setting again replaces the whole quota: limits left out become unlimited
    assert store.set_quota("acme", tokens_per_minute=5) == Quota("acme", None,
                                                                 tokens_per_minute=5)
    assert store.get_quota("acme") == Quota("acme", None, tokens_per_minute=5)
    store.clear_quota("acme", "llama")
    assert store.get_quota("acme", "llama") == Quota("acme", "llama")
    with pytest.raises(NotFound, match="quota: tenant 'acme' has no quota on endpoint 'llama'"):
        store.clear_quota("acme", "llama")


@pytest.mark.parametrize(("field", "value"), [
    ("requests_per_minute", 0),
    ("requests_per_minute", -1),
    ("requests_per_minute", 10_000_001),
    ("tokens_per_minute", 1.5),
    ("tokens_per_minute", "100"),
    ("concurrent_requests", True),
    ("concurrent_requests", 100_001),
    ("tokens_per_month", 10**15 + 1),
    ("tokens_per_month", 2**70),
])
def test_quota_values_out_of_range_are_refused(store: Store, field: str, value: object) -> None:
    store.create_tenant("acme")
    store.set_quota("acme", requests_per_minute=10)
    before = snapshot(store)
    with pytest.raises(Invalid) as refused:
        store.set_quota("acme", **{field: value})
    assert refused.value.field == field
    assert str(refused.value).startswith(f"{field}: must be an integer in [1, ")
    assert snapshot(store) == before


def test_a_quota_on_an_endpoint_needs_access_to_it(store: Store) -> None:
    store.create_tenant("acme")
    store.create_endpoint("qwen")
    with pytest.raises(Invalid, match="grant it first"):
        store.set_quota("acme", "qwen", requests_per_minute=5)
    store.grant("qwen", "acme")
    assert store.set_quota("acme", "qwen", requests_per_minute=5).requests_per_minute == 5


def test_the_database_enforces_one_tenant_wide_quota(store: Store) -> None:
    """The partial unique index holds even for a writer that bypasses the store's checks."""
    store.create_tenant("acme")
    store.set_quota("acme", requests_per_minute=1)
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO quotas (tenant_id, endpoint_id, requests_per_minute) "
                             "SELECT id, NULL, 2 FROM tenants WHERE name = 'acme'"))
    assert store.get_quota("acme").requests_per_minute == 1


def test_unsupported_backend() -> None:
    with pytest.raises(Invalid, match="database_url"):
        Store("mysql+pymysql://nobody@127.0.0.1/none")


def test_store_errors_do_not_carry_statement_parameters(empty_database_url: str) -> None:
    """A failing query's exception (which gets logged) hides its parameters: a key's hash is
    one of them when authentication fails."""
    import sqlalchemy as sa

    from serving.tenancy.database import make_engine

    secret = "4f7e1c0b9a8d" * 5
    engine = make_engine(empty_database_url)
    with pytest.raises(sa.exc.DBAPIError) as failed, engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM no_such_table WHERE key_hash = :h"), {"h": secret})
    engine.dispose()
    assert secret not in str(failed.value) and "hidden" in str(failed.value)
