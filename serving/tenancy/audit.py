"""The audit log of admin actions: who (the calling key's tenant, prefix and scope), did what
(an action on a target, with the state before and after), when, and from which address.

A store acting for someone (`Store.acting_as`) appends one entry per row its writes add,
change or delete, in the same transaction as the write: a write that rolls back leaves no
entry, and no write commits without its entry. Entries are never updated or deleted (the
store has no call for it, and migration 0006's triggers refuse it). Nothing secret enters:
each table shows only the columns listed in `_SHOWN`, so a key appears by id and prefix,
never its plaintext (which the store never holds) or its hash."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, event, inspect, select
from sqlalchemy.orm import Session, UOWTransaction

from serving.tenancy import validation as check
from serving.tenancy.errors import Invalid
from serving.tenancy.models import (
    AdapterRow,
    ApiKeyRow,
    AuditRow,
    Base,
    CatalogueModelRow,
    EndpointRow,
    GrantRow,
    QuotaRow,
    TenantRow,
)
from serving.tenancy.records import Principal

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_MAX_ID = 2**63 - 1  # the id column is a 64-bit integer on PostgreSQL
_DOOMED_GRANTS = "audit.grants_of_deleted_endpoints"  # session.info key, see _before_flush


@dataclass(frozen=True)
class Actor:
    """Who makes a change: the calling key's tenant, prefix and scope, and the address the
    request came from (None when the server did not say)."""

    tenant: str
    key_prefix: str
    scope: str
    source_address: str | None

    @classmethod
    def of(cls, principal: Principal, source_address: str | None) -> Actor:
        return cls(principal.tenant, principal.key_prefix, str(principal.scope), source_address)


@dataclass(frozen=True)
class Change:
    """One row's change, as the log tells it, e.g. ("quota.set", "tenant/acme/quota",
    "acme", {"requests_per_minute": 60}, {"requests_per_minute": 120})."""

    action: str
    target: str
    tenant: str | None  # the tenant the change is about; None for e.g. a shared endpoint
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor_tenant: str
    actor_key_prefix: str
    actor_scope: str
    source_address: str | None
    action: str
    target: str
    tenant: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    def seen_by(self, tenant: str) -> AuditEntry:
        """The entry as a tenant's own admin may see it: another tenant's actor (the
        platform's operators) is shown by tenant and scope, not by key prefix or address."""
        if self.actor_tenant == tenant:
            return self
        return replace(self, actor_key_prefix="", source_address=None)


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    has_more: bool  # more entries match past the last one: ask again with its id as after_id


# Writing: the session of an acting store's transaction reports each flush


def record_writes(session: Session, actor: Actor, at: datetime) -> None:
    """Append an entry for every row this session's flushes add, change or delete, in the
    session's own transaction, each stamped `at` and `actor`."""

    def append(s: Session, _flush: UOWTransaction) -> None:
        # After the flush, new rows have their ids; the new/dirty/deleted sets and the
        # attributes' history still describe what the flush did.
        names = _Names(s)
        changes = [change for kind, rows in (("create", s.new), ("update", s.dirty),
                                             ("delete", s.deleted))
                   for row in rows if (change := describe(row, kind, names)) is not None]
        if changes:
            s.connection().execute(AuditRow.__table__.insert(),
                                   [_values(actor, at, change) for change in changes])

    event.listen(session, "before_flush", _before_flush)
    event.listen(session, "after_flush", append)


def append(session: Session, actor: Actor, at: datetime, change: Change) -> None:
    """One entry for a change the session's flushes cannot see (a conditional UPDATE, as a
    batch's cancel makes), in the session's own transaction."""
    session.connection().execute(AuditRow.__table__.insert(), [_values(actor, at, change)])


def _before_flush(s: Session, _flush: UOWTransaction, _instances: object) -> None:
    """An endpoint's grants go with it (ON DELETE CASCADE): note whose they were while the
    rows are still there, for the endpoint's `before`."""
    for row in s.deleted:
        if isinstance(row, EndpointRow):
            s.info.setdefault(_DOOMED_GRANTS, {})[row.id] = _Names(s).grantees(row.id)


class _Names:
    """Tenant and endpoint names by id, read on the flushing session's own connection."""

    def __init__(self, s: Session) -> None:
        self._s = s

    def tenant(self, tenant_id: int | None) -> str | None:
        if tenant_id is None:
            return None
        return self._s.connection().scalar(select(TenantRow.name).where(
            TenantRow.id == tenant_id))

    def endpoint(self, endpoint_id: int) -> str | None:
        return self._s.connection().scalar(select(EndpointRow.name).where(
            EndpointRow.id == endpoint_id))

    def grantees(self, endpoint_id: int) -> list[str]:
        return list(self._s.connection().scalars(
            select(TenantRow.name).join(GrantRow, GrantRow.tenant_id == TenantRow.id)
            .where(GrantRow.endpoint_id == endpoint_id).order_by(TenantRow.name)))

    def doomed_grants(self, endpoint_id: int) -> list[str]:
        return self._s.info.get(_DOOMED_GRANTS, {}).get(endpoint_id, [])


# The columns the log shows of each table, by column name. A column not listed is never
# shown: above all api_keys.key_hash (ids and names appear as targets and tenants).
_SHOWN: dict[type[Base], tuple[str, ...]] = {
    TenantRow: ("priority", "status", "slo_ttft_p95_ms", "slo_itl_p95_ms", "slo_objective"),
    ApiKeyRow: ("prefix", "scope", "expires_at", "revoked_at"),
    EndpointRow: ("deployment",),
    QuotaRow: ("requests_per_minute", "tokens_per_minute", "concurrent_requests",
               "tokens_per_month"),
    GrantRow: (),
    AdapterRow: ("endpoint", "path", "digest", "rank"),
    CatalogueModelRow: ("owner", "source", "version", "digest"),
}


def describe(row: object, kind: str, names: _Names) -> Change | None:
    """The change a flush made to one row; None for an update that changed nothing (a
    value set to what it was). `kind`: create, update or delete."""
    changed = _changed_columns(row) if kind == "update" else None
    if changed is not None and not changed:
        return None
    before, after = _states(row, kind, changed)
    if isinstance(row, TenantRow):
        return Change(f"tenant.{kind}", f"tenant/{row.name}", row.name, before, after)
    if isinstance(row, ApiKeyRow):
        action = "key.revoke" if kind == "update" and changed == {"revoked_at"} else f"key.{kind}"
        return Change(action, f"key/{row.id}", names.tenant(row.tenant_id), before, after)
    if isinstance(row, EndpointRow):
        owner = names.tenant(row.owner_id)
        if kind != "update":  # whose it is, and for a deleted one who lost it with it
            state = {"owner": owner, **(before or after or {})}
            if kind == "delete":
                before = {**state, "grants": names.doomed_grants(row.id)}
            else:
                after = state
        return Change(f"endpoint.{kind}", f"endpoint/{row.name}", owner, before, after)
    if isinstance(row, GrantRow):
        endpoint, tenant = names.endpoint(row.endpoint_id), names.tenant(row.tenant_id)
        state = {"endpoint": endpoint, "tenant": tenant}
        return Change(f"grant.{kind}", f"endpoint/{endpoint}/grant/{tenant}", tenant,
                      state if kind == "delete" else None, None if kind == "delete" else state)
    if isinstance(row, QuotaRow):
        tenant = names.tenant(row.tenant_id)
        where = "" if row.endpoint_id is None else f"/endpoint/{names.endpoint(row.endpoint_id)}"
        action = "quota.clear" if kind == "delete" else "quota.set"
        return Change(action, f"tenant/{tenant}{where}/quota", tenant, before, after)
    if isinstance(row, AdapterRow):
        return Change(f"adapter.{kind}", f"adapter/{row.name}", row.tenant, before, after)
    if isinstance(row, CatalogueModelRow):
        return Change(f"catalogue_model.{kind}", f"catalogue_model/{row.name}", row.owner,
                      before, after)
    # A table the admin API may write one day: recorded, with no values shown.
    table = type(row).__tablename__
    key = ",".join(str(v) for v in inspect(row).identity or ())
    return Change(f"{table}.{kind}", f"{table}/{key}", None, None, None)


def _changed_columns(row: object) -> set[str]:
    state = inspect(row)
    return {attr.key for attr in state.mapper.column_attrs
            if state.attrs[attr.key].history.has_changes()}


def _states(row: object, kind: str,
            changed: set[str] | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The shown columns before and after: all of them for a create or delete, the changed
    ones for an update, e.g. ({"status": "active"}, {"status": "suspended"})."""
    shown = _SHOWN.get(type(row), ())
    if kind != "update":
        state = {column: _plain(column, getattr(row, column)) for column in shown}
        return (None, state) if kind == "create" else (state, None)
    before, after = {}, {}
    for column in shown:
        if column in (changed or ()):
            history = inspect(row).attrs[column].history
            before[column] = _plain(column, history.deleted[0] if history.deleted else None)
            after[column] = _plain(column, history.added[0] if history.added else None)
    return before, after


def _plain(column: str, value: Any) -> Any:
    """A value as JSON holds it: times in ISO 8601 UTC, an endpoint's deployment as its
    object (the column keeps it as JSON text)."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if column == "deployment" and isinstance(value, str):
        return json.loads(value)
    return value


def _values(actor: Actor, at: datetime, change: Change) -> dict[str, Any]:
    return {"at": at, "actor_tenant": actor.tenant, "actor_key_prefix": actor.key_prefix,
            "actor_scope": actor.scope, "source_address": actor.source_address,
            "action": change.action, "target": change.target, "tenant": change.tenant,
            "before": change.before, "after": change.after}


# Reading


@dataclass(frozen=True)
class AuditQuery:
    """Entries with id > after_id, oldest first, at most `limit`; optionally only those at
    or after `since` and before `until`, and only those about one tenant."""

    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None
    after_id: int = 0
    limit: int = DEFAULT_LIMIT


def checked(query: AuditQuery) -> AuditQuery:
    """The query with every field checked; Invalid names the first bad one."""
    since = None if query.since is None else check.moment("since", query.since)
    until = None if query.until is None else check.moment("until", query.until)
    if since is not None and until is not None and until <= since:
        raise Invalid("until", f"must be after since ({since.isoformat()})")
    if isinstance(query.after_id, bool) or not isinstance(query.after_id, int) or not (
            0 <= query.after_id <= _MAX_ID):
        raise Invalid("after_id", f"must be an entry id in [0, {_MAX_ID}]")
    if isinstance(query.limit, bool) or not isinstance(query.limit, int) or not (
            1 <= query.limit <= MAX_LIMIT):
        raise Invalid("limit", f"must be an integer in [1, {MAX_LIMIT}]")
    tenant = None if query.tenant is None else check.name("tenant", query.tenant)
    return AuditQuery(since, until, tenant, query.after_id, query.limit)


def read(engine: Engine, query: AuditQuery) -> AuditPage:
    """One page of entries. An unknown tenant has none, rather than being a 404: the log is
    history and outlives what it names."""
    q = checked(query)
    statement = (select(AuditRow).where(AuditRow.id > q.after_id).order_by(AuditRow.id)
                 .limit(q.limit + 1))  # one more than asked says whether more follow
    if q.since is not None:
        statement = statement.where(AuditRow.at >= q.since)
    if q.until is not None:
        statement = statement.where(AuditRow.at < q.until)
    if q.tenant is not None:
        statement = statement.where(AuditRow.tenant == q.tenant)
    with Session(engine) as s:
        rows = s.scalars(statement).all()
    return AuditPage(list(_entries(rows[:q.limit])), has_more=len(rows) > q.limit)


def _entries(rows: Iterable[AuditRow]) -> Iterable[AuditEntry]:
    for r in rows:
        yield AuditEntry(r.id, r.at, r.actor_tenant, r.actor_key_prefix, r.actor_scope,
                         r.source_address, r.action, r.target, r.tenant, r.before, r.after)
