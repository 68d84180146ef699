"""The tenancy store: tenants, keys, endpoints and grants, quotas and the usage ledger."""

from __future__ import annotations

import copy
import hmac
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

from sqlalchemy import Select, func, make_url, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from observability.slo import SloSettings
from serving.tenancy import audit, keys, ledger
from serving.tenancy import validation as check
from serving.tenancy.admission import Limits
from serving.tenancy.database import make_engine
from serving.tenancy.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated
from serving.tenancy.models import (
    AdapterRow,
    ApiKeyRow,
    EndpointRow,
    GrantRow,
    QuotaRow,
    TenantRow,
)
from serving.tenancy.records import (
    ApiKey,
    CreatedKey,
    Endpoint,
    KeyScope,
    Principal,
    PriorityClass,
    Quota,
    Tenant,
    TenantStatus,
    UsageBucket,
    UsageRecord,
)

SUPPORTED_BACKENDS = ("sqlite", "postgresql")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Store:
    """Durable tenancy state behind one SQLAlchemy engine. Synchronous: the gateway calls it
    from a worker thread (`asyncio.to_thread`). Every write is one transaction, validated
    before any SQL runs, so a refused write leaves the store as it was. Run `upgrade()` on
    the URL first: the store does not create tables."""

    def __init__(self, database_url: str, *, clock: Callable[[], datetime] = utc_now) -> None:
        backend = make_url(database_url).get_backend_name()
        if backend not in SUPPORTED_BACKENDS:
            raise Invalid("database_url", f"backend {backend!r} is not one of {SUPPORTED_BACKENDS}")
        self.engine = make_engine(database_url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._clock = clock
        self._actor: audit.Actor | None = None

    def close(self) -> None:
        self.engine.dispose()

    def acting_as(self, actor: audit.Actor) -> Store:
        """This store with each of its writes recorded in the audit log as `actor`'s, in the
        write's own transaction. A view sharing the engine: close the store, not the view."""
        view = copy.copy(self)
        view._actor = actor
        return view

    @property
    def actor(self) -> audit.Actor | None:
        """Whose writes this store makes (None: the platform's own, not audited)."""
        return self._actor

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        """One transaction; uniqueness races that slipped past the checks become Conflict."""
        try:
            with self._sessions() as session, session.begin():
                if self._actor is not None:
                    audit.record_writes(session, self._actor, self._now())
                yield session
        except IntegrityError as exc:
            raise Conflict(f"the write conflicts with existing data: {exc.orig}") from exc

    def _now(self) -> datetime:
        return check.moment("clock", self._clock())

    # Tenants

    def create_tenant(self, name: str, *,
                      priority: PriorityClass | str = PriorityClass.STANDARD,
                      slo: SloSettings | Mapping[str, object] | None = None) -> Tenant:
        """A new active tenant; its SLO targets are the defaults unless `slo` sets some."""
        name = check.name("name", name)
        priority = check.choice("priority", PriorityClass, priority)
        slo = SloSettings() if slo is None else check.slo_settings("slo", slo)
        with self._tx() as s:
            if s.scalar(select(TenantRow.id).where(TenantRow.name == name)) is not None:
                raise Conflict(f"name: tenant {name!r} exists")
            row = TenantRow(name=name, priority=priority, status=TenantStatus.ACTIVE,
                            created_at=self._now())
            _set_slo(row, slo)
            s.add(row)
        return _tenant(row)

    def get_tenant(self, name: str) -> Tenant:
        with self._tx() as s:
            return _tenant(_tenant_row(s, name))

    def list_tenants(self) -> list[Tenant]:
        with self._tx() as s:
            return [_tenant(row) for row in s.scalars(select(TenantRow).order_by(TenantRow.name))]

    def update_tenant(self, name: str, *, priority: PriorityClass | str | None = None,
                      status: TenantStatus | str | None = None,
                      slo: SloSettings | Mapping[str, object] | None = None) -> Tenant:
        """Change the fields given; `slo` replaces all three targets (a None in it, or a
        target left out of it, restores that target's default)."""
        new_priority = None if priority is None else check.choice("priority", PriorityClass,
                                                                  priority)
        new_status = None if status is None else check.choice("status", TenantStatus, status)
        new_slo = None if slo is None else check.slo_settings("slo", slo)
        with self._tx() as s:
            row = _tenant_row(s, name)
            if new_priority is not None:
                row.priority = new_priority
            if new_status is not None:
                row.status = new_status
            if new_slo is not None:
                _set_slo(row, new_slo)
        return _tenant(row)

    # API keys

    def create_key(self, tenant: str, *, scope: KeyScope | str = KeyScope.INFERENCE,
                   expires_at: datetime | None = None) -> CreatedKey:
        """A new key for the tenant. The plaintext is in the result and nowhere else: only its
        hash and a short prefix are stored."""
        scope = check.choice("scope", KeyScope, scope)
        now = self._now()
        if expires_at is not None:
            expires_at = check.moment("expires_at", expires_at)
            if expires_at <= now:
                raise Invalid("expires_at", f"must be in the future, got {expires_at.isoformat()}")
        plaintext = keys.new_key()
        with self._tx() as s:
            owner = _tenant_row(s, tenant)
            row = ApiKeyRow(tenant_id=owner.id, key_hash=keys.key_hash(plaintext),
                            prefix=keys.visible_prefix(plaintext), scope=scope, created_at=now,
                            expires_at=expires_at, revoked_at=None)
            s.add(row)
            s.flush()
            return CreatedKey(plaintext, _key(row, owner.name))

    def list_keys(self, tenant: str) -> list[ApiKey]:
        with self._tx() as s:
            owner = _tenant_row(s, tenant)
            rows = s.scalars(select(ApiKeyRow).where(ApiKeyRow.tenant_id == owner.id)
                             .order_by(ApiKeyRow.id))
            return [_key(row, owner.name) for row in rows]

    def revoke_key(self, key_id: int) -> ApiKey:
        """Revoke a key by its id; revoking it again keeps the first revocation time."""
        with self._tx() as s:
            found = s.execute(select(ApiKeyRow, TenantRow.name).join(TenantRow)
                              .where(ApiKeyRow.id == check.row_id("key_id", key_id))).first()
            if found is None:
                raise NotFound(f"key_id: no API key with id {key_id}")
            row, tenant = found
            if row.revoked_at is None:
                row.revoked_at = self._now()
            return _key(row, tenant)

    def authenticate(self, plaintext: str) -> Principal:
        """Who a presented key acts for. Raises Unauthenticated (malformed, unknown, revoked,
        expired) or Forbidden (its tenant is suspended)."""
        if not keys.well_formed(plaintext):
            raise Unauthenticated("malformed")
        digest = keys.key_hash(plaintext)
        with self._tx() as s:
            found = s.execute(select(ApiKeyRow, TenantRow).join(TenantRow)
                              .where(ApiKeyRow.key_hash == digest)).first()
            # The indexed look-up compares digests of a secret the caller cannot steer, so its
            # timing tells nothing; the explicit comparison is constant-time all the same.
            if found is None or not hmac.compare_digest(found[0].key_hash, digest):
                raise Unauthenticated("unknown")
            row, tenant = found
            if not _key(row, tenant.name).usable_at(self._now()):
                raise Unauthenticated("revoked" if row.revoked_at is not None else "expired")
            if tenant.status != TenantStatus.ACTIVE:
                raise Forbidden(f"tenant {tenant.name!r} is {tenant.status}")
            return Principal(tenant.name, PriorityClass(tenant.priority), row.prefix,
                             KeyScope(row.scope), _slo_settings(tenant).targets)

    # Endpoints and grants

    def create_endpoint(self, name: str, *, owner: str | None = None,
                        deployment: dict[str, Any] | None = None) -> Endpoint:
        """An endpoint owned by `owner`, or shared (no owner) and reachable through grants.
        `deployment`: how the platform deploys it (kept as given, as JSON)."""
        name = check.name("name", name)
        with self._tx() as s:
            owner_id = None if owner is None else _tenant_row(s, owner).id
            if s.scalar(select(EndpointRow.id).where(EndpointRow.name == name)) is not None:
                raise Conflict(f"name: endpoint {name!r} exists")
            if s.get(AdapterRow, name) is not None:  # one model id, one meaning
                raise Conflict(f"name: {name!r} is a LoRA adapter's model id")
            row = EndpointRow(name=name, owner_id=owner_id, created_at=self._now(),
                              deployment=None if deployment is None else json.dumps(deployment))
            s.add(row)
            s.flush()
            return _endpoint(s, row)

    def get_endpoint(self, name: str) -> Endpoint:
        with self._tx() as s:
            return _endpoint(s, _endpoint_row(s, name))

    def set_endpoint_deployment(self, name: str, deployment: dict[str, Any]) -> Endpoint:
        """Replace how the platform deploys an endpoint that it deploys (kept as given, as
        JSON); Conflict for one it does not."""
        with self._tx() as s:
            row = _endpoint_row(s, name)
            if row.deployment is None:
                raise Conflict(f"name: endpoint {name!r} is not deployed by the platform")
            row.deployment = json.dumps(deployment)
            s.flush()
            return _endpoint(s, row)

    def list_endpoints(self, *, usable_by: str | None = None) -> list[Endpoint]:
        """All endpoints, or those a tenant may call: its own and the shared ones granted it."""
        with self._tx() as s:
            query = select(EndpointRow).order_by(EndpointRow.name)
            if usable_by is not None:
                tenant_id = _tenant_row(s, usable_by).id
                granted = select(GrantRow.endpoint_id).where(GrantRow.tenant_id == tenant_id)
                query = query.where((EndpointRow.owner_id == tenant_id)
                                    | EndpointRow.id.in_(granted))
            return [_endpoint(s, row) for row in s.scalars(query)]

    def delete_endpoint(self, name: str) -> None:
        """Remove an endpoint with its grants and quotas; its ledger records stay. Refused
        while tenants' LoRA adapters run on it: they would name a base that is gone."""
        with self._tx() as s:
            row = _endpoint_row(s, name)
            adapters = s.scalar(select(func.count()).select_from(AdapterRow)
                                .where(AdapterRow.endpoint == row.name))
            if adapters:
                raise Conflict(f"name: endpoint {name!r} has {adapters} LoRA adapter(s) "
                               "registered on it; delete them first")
            s.delete(row)

    def grant(self, endpoint: str, tenant: str) -> Endpoint:
        """Let a tenant use a shared endpoint. Granting twice is a no-op, so configuration can
        be re-applied."""
        with self._tx() as s:
            ep, who = _endpoint_row(s, endpoint), _tenant_row(s, tenant)
            if ep.owner_id is not None:
                raise Invalid("endpoint", f"{endpoint!r} is owned by one tenant; only shared "
                                          "endpoints take grants")
            if s.get(GrantRow, (ep.id, who.id)) is None:
                s.add(GrantRow(endpoint_id=ep.id, tenant_id=who.id, created_at=self._now()))
                s.flush()
            return _endpoint(s, ep)

    def revoke_grant(self, endpoint: str, tenant: str) -> Endpoint:
        with self._tx() as s:
            ep, who = _endpoint_row(s, endpoint), _tenant_row(s, tenant)
            row = s.get(GrantRow, (ep.id, who.id))
            if row is None:
                raise NotFound(f"tenant: {tenant!r} has no grant on endpoint {endpoint!r}")
            s.delete(row)
            s.flush()
            return _endpoint(s, ep)

    def can_use(self, tenant: str, endpoint: str) -> bool:
        with self._tx() as s:
            return _may_use(s, _tenant_row(s, tenant), _endpoint_row(s, endpoint))

    # Quotas

    def set_quota(self, tenant: str, endpoint: str | None = None, *,
                  requests_per_minute: int | None = None, tokens_per_minute: int | None = None,
                  concurrent_requests: int | None = None,
                  tokens_per_month: int | None = None) -> Quota:
        """Replace the tenant's quota (or its quota on one endpoint it may use); a limit left
        None is unlimited."""
        values = {
            "requests_per_minute": check.quota_value("requests_per_minute", requests_per_minute),
            "tokens_per_minute": check.quota_value("tokens_per_minute", tokens_per_minute),
            "concurrent_requests": check.quota_value("concurrent_requests", concurrent_requests),
            "tokens_per_month": check.quota_value("tokens_per_month", tokens_per_month),
        }
        with self._tx() as s:
            who = _tenant_row(s, tenant)
            endpoint_id = None
            if endpoint is not None:
                ep = _endpoint_row(s, endpoint)
                if not _may_use(s, who, ep):
                    raise Invalid("endpoint", f"tenant {tenant!r} may not use {endpoint!r}; "
                                              "grant it first")
                endpoint_id = ep.id
            row = s.scalar(_quota_query(who.id, endpoint_id))
            if row is None:
                row = QuotaRow(tenant_id=who.id, endpoint_id=endpoint_id)
                s.add(row)
            for field, value in values.items():
                setattr(row, field, value)
        return Quota(tenant, endpoint, **values)

    def get_quota(self, tenant: str, endpoint: str | None = None) -> Quota:
        """The quota as set; all limits None (unlimited) when none is."""
        with self._tx() as s:
            who = _tenant_row(s, tenant)
            endpoint_id = None if endpoint is None else _endpoint_row(s, endpoint).id
            row = s.scalar(_quota_query(who.id, endpoint_id))
            if row is None:
                return Quota(tenant, endpoint)
            return Quota(tenant, endpoint, row.requests_per_minute, row.tokens_per_minute,
                         row.concurrent_requests, row.tokens_per_month)

    def clear_quota(self, tenant: str, endpoint: str | None = None) -> None:
        with self._tx() as s:
            who = _tenant_row(s, tenant)
            endpoint_id = None if endpoint is None else _endpoint_row(s, endpoint).id
            row = s.scalar(_quota_query(who.id, endpoint_id))
            if row is None:
                where = "" if endpoint is None else f" on endpoint {endpoint!r}"
                raise NotFound(f"quota: tenant {tenant!r} has no quota{where}")
            s.delete(row)

    def limits_for(self, tenant: str, endpoint: str) -> tuple[Limits, Limits]:
        """The tenant-wide and the per-endpoint limits, for the admission counters' two scopes."""
        return self.get_quota(tenant).limits, self.get_quota(tenant, endpoint).limits

    # Usage ledger

    def record_usage(self, records: Iterable[UsageRecord]) -> int:
        """Append ledger records in one transaction; a request id already recorded is skipped,
        so retried writes never count a request twice. Returns how many were new."""
        rows = [ledger.validated(record) for record in records]
        with self._tx() as s:
            return ledger.insert(s, rows)

    def monthly_tokens(self, tenant: str, year: int, month: int, *,
                       endpoint: str | None = None) -> int:
        """Prompt plus completion tokens of the tenant's records created in that UTC month."""
        with self._tx() as s:
            return ledger.month_tokens(s, check.name("tenant", tenant), year, month,
                                       None if endpoint is None else check.name("endpoint",
                                                                                endpoint))

    def usage_summary(self, tenant: str, start: datetime, end: datetime, *,
                      by: str = "hour") -> list[UsageBucket]:
        """The tenant's records created in [start, end), per UTC hour or day with records."""
        with self._tx() as s:
            return ledger.summary(s, check.name("tenant", tenant), start, end, by)

    def usage_records(self, tenant: str, start: datetime, end: datetime) -> list[UsageRecord]:
        """The tenant's records created in [start, end), oldest first (for SLA reports, which
        need every request's timings: percentiles cannot be summed)."""
        with self._tx() as s:
            return ledger.records(s, check.name("tenant", tenant), start, end)

    def export_csv(self, out: TextIO, start: datetime, end: datetime, *,
                   tenant: str | None = None) -> int:
        """Write the records created in [start, end) as CSV, oldest first; returns the count."""
        with self._tx() as s:
            return ledger.export_csv(s, out, start, end,
                                     None if tenant is None else check.name("tenant", tenant))


def _tenant_row(s: Session, name: str) -> TenantRow:
    row = s.scalar(select(TenantRow).where(TenantRow.name == check.name("tenant", name)))
    if row is None:
        raise NotFound(f"tenant: no tenant named {name!r}")
    return row


def _endpoint_row(s: Session, name: str) -> EndpointRow:
    row = s.scalar(select(EndpointRow).where(EndpointRow.name == check.name("endpoint", name)))
    if row is None:
        raise NotFound(f"endpoint: no endpoint named {name!r}")
    return row


def _may_use(s: Session, tenant: TenantRow, endpoint: EndpointRow) -> bool:
    if endpoint.owner_id is not None:
        return endpoint.owner_id == tenant.id
    return s.get(GrantRow, (endpoint.id, tenant.id)) is not None


def _quota_query(tenant_id: int, endpoint_id: int | None) -> Select[tuple[QuotaRow]]:
    query = select(QuotaRow).where(QuotaRow.tenant_id == tenant_id)
    if endpoint_id is None:
        return query.where(QuotaRow.endpoint_id.is_(None))
    return query.where(QuotaRow.endpoint_id == endpoint_id)


def _set_slo(row: TenantRow, slo: SloSettings) -> None:
    row.slo_ttft_p95_ms = slo.ttft_p95_ms
    row.slo_itl_p95_ms = slo.itl_p95_ms
    row.slo_objective = slo.objective


def _slo_settings(row: TenantRow) -> SloSettings:
    return SloSettings(ttft_p95_ms=row.slo_ttft_p95_ms, itl_p95_ms=row.slo_itl_p95_ms,
                       objective=row.slo_objective)


def _tenant(row: TenantRow) -> Tenant:
    return Tenant(row.name, PriorityClass(row.priority), TenantStatus(row.status), row.created_at,
                  _slo_settings(row))


def _key(row: ApiKeyRow, tenant: str) -> ApiKey:
    return ApiKey(row.id, tenant, row.prefix, KeyScope(row.scope), row.created_at,
                  row.expires_at, row.revoked_at)


def _endpoint(s: Session, row: EndpointRow) -> Endpoint:
    owner = None if row.owner_id is None else s.scalar(
        select(TenantRow.name).where(TenantRow.id == row.owner_id))
    grants = s.scalars(select(TenantRow.name).join(GrantRow, GrantRow.tenant_id == TenantRow.id)
                       .where(GrantRow.endpoint_id == row.id).order_by(TenantRow.name))
    return Endpoint(row.name, owner, tuple(grants), row.created_at,
                    None if row.deployment is None else json.loads(row.deployment))

