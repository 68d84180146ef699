"""The audit log in the store, on SQLite and PostgreSQL: one entry per change an acting store
makes, with its before and after, in the change's own transaction; nothing for reads, refused
writes or writes that change nothing; no secret ever; rows that cannot be changed or deleted;
pages and filters."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from observability.slo import SloSettings
from serving.tenancy import Conflict, Invalid, NotFound, Store, keys
from serving.tenancy.audit import Actor, AuditEntry, AuditQuery, read
from serving.tenancy.models import TenantRow
from tests.manual_clock import Clock

OPS = Actor("admin", "afk_0ps4dmin", "admin", "10.0.0.7")
UNLIMITED = {"requests_per_minute": None, "tokens_per_minute": None,
             "concurrent_requests": None, "tokens_per_month": None}
DEFAULT_TENANT = {"priority": "standard", "status": "active", "slo_ttft_p95_ms": None,
                  "slo_itl_p95_ms": None, "slo_objective": None}


def entries(store: Store, **query: object) -> list[AuditEntry]:
    return read(store.engine, AuditQuery(**{"limit": 1000, **query})).entries


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def acting(store: Store) -> Store:
    """acme (key 1, quota 60 rpm / 1000 tpm, granted the shared `llama`) and beta, made by
    the plain store, so the log starts empty; the store as OPS's."""
    for name in ("acme", "beta"):
        store.create_tenant(name)
    store.create_key("acme")
    store.create_endpoint("llama")
    store.grant("llama", "acme")
    store.set_quota("acme", requests_per_minute=60, tokens_per_minute=1000)
    assert entries(store) == []
    return store.acting_as(OPS)


# Each kind of change: exactly one entry, with what changed before and after

CASES: list[tuple[str, Callable[[Store], object], tuple]] = [
    # (case, the write, (action, target, tenant, before, after))
    ("create tenant", lambda s: s.create_tenant("newco", priority="critical"),
     ("tenant.create", "tenant/newco", "newco", None,
      {**DEFAULT_TENANT, "priority": "critical"})),
    ("suspend tenant", lambda s: s.update_tenant("acme", status="suspended"),
     ("tenant.update", "tenant/acme", "acme", {"status": "active"}, {"status": "suspended"})),
    ("set SLO targets",
     lambda s: s.update_tenant("acme", slo=SloSettings(ttft_p95_ms=800, objective=0.95)),
     ("tenant.update", "tenant/acme", "acme", {"slo_ttft_p95_ms": None, "slo_objective": None},
      {"slo_ttft_p95_ms": 800, "slo_objective": 0.95})),
    ("revoke key", lambda s: s.revoke_key(1),
     ("key.revoke", "key/1", "acme", {"revoked_at": None}, {"revoked_at": "NOW"})),
    ("create endpoint", lambda s: s.create_endpoint("popup", owner="acme",
                                                    deployment={"model": "builtin:demo"}),
     ("endpoint.create", "endpoint/popup", "acme", None,
      {"owner": "acme", "deployment": {"model": "builtin:demo"}})),
    # its grants and quotas go with it: the entry says whose grants they were
    ("delete endpoint", lambda s: s.delete_endpoint("llama"),
     ("endpoint.delete", "endpoint/llama", None,
      {"owner": None, "deployment": None, "grants": ["acme"]}, None)),
    ("grant", lambda s: s.grant("llama", "beta"),
     ("grant.create", "endpoint/llama/grant/beta", "beta", None,
      {"endpoint": "llama", "tenant": "beta"})),
    ("revoke grant", lambda s: s.revoke_grant("llama", "acme"),
     ("grant.delete", "endpoint/llama/grant/acme", "acme",
      {"endpoint": "llama", "tenant": "acme"}, None)),
    ("first quota", lambda s: s.set_quota("beta", tokens_per_month=10**6),
     ("quota.set", "tenant/beta/quota", "beta", None, {**UNLIMITED, "tokens_per_month": 10**6})),
    # set_quota replaces the quota: tpm, not given, goes back to unlimited
    ("change quota", lambda s: s.set_quota("acme", requests_per_minute=120),
     ("quota.set", "tenant/acme/quota", "acme",
      {"requests_per_minute": 60, "tokens_per_minute": 1000},
      {"requests_per_minute": 120, "tokens_per_minute": None})),
    ("endpoint quota", lambda s: s.set_quota("acme", "llama", concurrent_requests=4),
     ("quota.set", "tenant/acme/endpoint/llama/quota", "acme", None,
      {**UNLIMITED, "concurrent_requests": 4})),
    ("clear quota", lambda s: s.clear_quota("acme"),
     ("quota.clear", "tenant/acme/quota", "acme",
      {**UNLIMITED, "requests_per_minute": 60, "tokens_per_minute": 1000}, None)),
]


@pytest.mark.parametrize(("write", "expected"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_each_change_is_one_entry_with_before_and_after(
        acting: Store, clock: Clock, write: Callable[[Store], object], expected: tuple) -> None:
    clock.advance(minutes=5)
    write(acting)
    [entry] = entries(acting)
    action, target, tenant, before, after = expected
    after = after if after != {"revoked_at": "NOW"} else {"revoked_at": iso(clock.now)}
    assert (entry.action, entry.target, entry.tenant, entry.before, entry.after) == (
        action, target, tenant, before, after)
    assert (entry.at, entry.actor_tenant, entry.actor_key_prefix, entry.actor_scope,
            entry.source_address) == (clock.now, "admin", "afk_0ps4dmin", "admin", "10.0.0.7")


def test_a_new_key_is_logged_by_id_and_prefix_never_its_secret(acting: Store) -> None:
    created = acting.create_key("beta", scope="admin")
    [entry] = entries(acting)
    assert (entry.action, entry.target, entry.tenant, entry.before) == (
        "key.create", f"key/{created.key.id}", "beta", None)
    assert entry.after == {"prefix": created.key.prefix, "scope": "admin", "expires_at": None,
                           "revoked_at": None}
    with acting.engine.connect() as conn:
        everything = repr(conn.execute(sa.text("SELECT * FROM admin_audit")).all())
    secret = created.plaintext.removeprefix(created.key.prefix)  # the part never shown
    for leaked in (created.plaintext, keys.key_hash(created.plaintext), secret):
        assert leaked not in everything


def test_reads_and_a_store_acting_for_nobody_record_nothing(acting: Store, store: Store) -> None:
    acting.get_tenant("acme")
    acting.list_endpoints(usable_by="acme")
    acting.get_quota("acme")
    store.create_tenant("quiet")  # the plain store: start-up's config, the gateway
    assert entries(store) == []


def test_writes_that_change_nothing_record_nothing(acting: Store) -> None:
    acting.update_tenant("acme", status="active")
    acting.grant("llama", "acme")
    acting.set_quota("acme", requests_per_minute=60, tokens_per_minute=1000)
    acting.revoke_key(1)
    acting.revoke_key(1)  # the second keeps the first revocation: no change, no entry
    assert [e.action for e in entries(acting)] == ["key.revoke"]


@pytest.mark.parametrize("refused", [
    lambda s: s.create_tenant("acme"),
    lambda s: s.set_quota("beta", "llama", requests_per_minute=1),
    lambda s: s.clear_quota("beta"),
    lambda s: s.revoke_key(99),
])
def test_a_refused_write_records_nothing(acting: Store,
                                         refused: Callable[[Store], object]) -> None:
    with pytest.raises((Conflict, Invalid, NotFound)):
        refused(acting)
    assert entries(acting) == []


def test_the_entry_commits_and_rolls_back_with_its_change(acting: Store, clock: Clock) -> None:
    """Written in the change's transaction: a transaction that fails after the change was
    flushed (and its entry written) leaves neither."""
    with pytest.raises(RuntimeError), acting._tx() as s:
        s.add(TenantRow(name="ghost", priority="standard", status="active",
                        created_at=clock.now))
        s.flush()
        assert s.connection().scalar(sa.text("SELECT count(*) FROM admin_audit")) == 1
        raise RuntimeError("fails before commit")
    assert entries(acting) == []
    assert "ghost" not in [t.name for t in acting.list_tenants()]


# Append-only


@pytest.mark.parametrize("statement", ["UPDATE admin_audit SET action = 'tenant.nothing'",
                                       "UPDATE admin_audit SET before = NULL WHERE id = 1",
                                       "DELETE FROM admin_audit WHERE id = 1",
                                       "DELETE FROM admin_audit"])
def test_entries_cannot_be_changed_or_deleted(acting: Store, statement: str) -> None:
    acting.update_tenant("acme", status="suspended")
    logged = entries(acting)
    with pytest.raises(sa.exc.DBAPIError, match="admin_audit is append-only"), \
            acting.engine.begin() as conn:
        conn.execute(sa.text(statement))
    assert entries(acting) == logged


# Reading: filters and pages


def test_pages_follow_after_id_oldest_first(acting: Store) -> None:
    for n in range(5):
        acting.create_tenant(f"t{n}")
    first = read(acting.engine, AuditQuery(limit=2))
    assert [e.target for e in first.entries] == ["tenant/t0", "tenant/t1"] and first.has_more
    second = read(acting.engine, AuditQuery(limit=2, after_id=first.entries[-1].id))
    assert [e.target for e in second.entries] == ["tenant/t2", "tenant/t3"]
    last = read(acting.engine, AuditQuery(limit=2, after_id=second.entries[-1].id))
    assert [e.target for e in last.entries] == ["tenant/t4"] and not last.has_more


def test_filters_by_time_and_tenant(acting: Store, clock: Clock) -> None:
    start = clock.now
    acting.update_tenant("acme", status="suspended")  # at start
    clock.advance(hours=1)
    acting.set_quota("beta", requests_per_minute=5)  # at start + 1h
    clock.advance(hours=1)
    acting.update_tenant("acme", status="active")  # at start + 2h
    hour = timedelta(hours=1)
    assert [e.at for e in entries(acting, since=start + hour)] == [start + hour,
                                                                   start + 2 * hour]
    assert [e.at for e in entries(acting, until=start + hour)] == [start]  # until excluded
    assert [e.tenant for e in entries(acting, tenant="acme")] == ["acme", "acme"]
    assert entries(acting, tenant="acme", since=start + hour, until=start + 2 * hour) == []
    assert entries(acting, tenant="nobody") == []  # history outlives names: not a 404


@pytest.mark.parametrize(("query", "field"), [
    ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"limit": True}, "limit"),
    ({"after_id": -1}, "after_id"), ({"after_id": 2**63}, "after_id"),
    ({"tenant": "Not A Name"}, "tenant"),
    ({"since": datetime(2025, 3, 14)}, "since"),  # naive: ambiguous
    ({"since": datetime(2025, 3, 14).astimezone(), "until": datetime(2025, 3, 13).astimezone()},
     "until"),
])
def test_a_bad_query_names_its_field(store: Store, query: dict, field: str) -> None:
    with pytest.raises(Invalid) as refused:
        read(store.engine, AuditQuery(**query))
    assert refused.value.field == field


def test_a_tenant_sees_other_tenants_actors_by_tenant_and_scope_only(acting: Store) -> None:
    acting.set_quota("acme", requests_per_minute=5)
    acting.acting_as(Actor("acme", "afk_acmeadmin", "admin", "10.0.0.9")).set_quota(
        "acme", requests_per_minute=6)
    by_ops, by_acme = (e.seen_by("acme") for e in entries(acting))
    assert (by_ops.actor_tenant, by_ops.actor_scope, by_ops.actor_key_prefix,
            by_ops.source_address) == ("admin", "admin", "", None)
    assert (by_acme.actor_key_prefix, by_acme.source_address) == ("afk_acmeadmin", "10.0.0.9")
