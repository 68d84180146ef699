"""Admin operations beyond one plain store call: guarded updates, merged quotas, usage reports,
CSV export. Synchronous, like the store; the router runs each in one worker thread."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from typing import Literal

from observability import sla
from observability.sla import SlaReport
from serving.admin.protocol import QUOTA_FIELDS
from serving.tenancy import (
    ApiKey,
    Invalid,
    NotFound,
    Quota,
    Store,
    Tenant,
    TenantStatus,
    UsageBucket,
)
from serving.tenancy import validation as check

DEFAULT_WINDOW = timedelta(days=1)
# An SLA report reads every record of its window (percentiles cannot be summed): a quarter at
# most, so one report cannot make a replica load a tenant's whole history.
SLA_MAX_WINDOW = timedelta(days=93)
# Key ids are 32-bit integers in the database; PostgreSQL refuses to compare the column with a
# larger number (an error, not "no row"), so such an id is known to be missing up front.
MAX_KEY_ID = 2**31 - 1


def window(since: datetime | None, until: datetime | None,
           now: datetime) -> tuple[datetime, datetime]:
    """The [since, until) a usage query means: until defaults to now, since to a day before."""
    until = now if until is None else until
    since = until - DEFAULT_WINDOW if since is None else since
    if until <= since:
        raise Invalid("until", f"must be after since ({since.isoformat()})")
    return since, until


def update_tenant(store: Store, name: str, *, priority: str | None, status: str | None,
                  caller_tenant: str, slo_changes: dict[str, float | None] | None = None,
                  ) -> Tenant:
    # A suspended tenant's keys stop working, so an admin suspending its own tenant would
    # lock every admin out; `aifactory admin bootstrap` is then the only way back in.
    if status == TenantStatus.SUSPENDED and name == caller_tenant:
        raise Invalid("status", f"tenant {name!r} holds the admin key making this request; "
                                "suspend it with another tenant's admin key")
    # SLO targets merge like quotas: those left out keep their values. Concurrent updates of
    # one tenant's targets: the last one wins.
    slo = None if not slo_changes else (store.get_tenant(name).slo_settings.model_dump()
                                        | slo_changes)
    return store.update_tenant(name, priority=priority, status=status, slo=slo)


def revoke_key(store: Store, key_id: int) -> ApiKey:
    if check.count("key_id", key_id) > MAX_KEY_ID:
        raise NotFound(f"key_id: no API key with id {key_id}")
    return store.revoke_key(key_id)


def update_quota(store: Store, tenant: str, endpoint: str | None,
                 changes: dict[str, int | None]) -> Quota:
    """Apply the given limits over the current ones, e.g. {"tokens_per_minute": None} clears
    that limit and keeps the others. Concurrent updates of one quota: the last one wins."""
    current = store.get_quota(tenant, endpoint)
    limits = {field: getattr(current, field) for field in QUOTA_FIELDS} | changes
    return store.set_quota(tenant, endpoint, **limits)


def usage_buckets(store: Store, tenant: str, since: datetime, until: datetime,
                  by: Literal["hour", "day"]) -> list[UsageBucket]:
    store.get_tenant(tenant)  # an unknown tenant is a 404, not an empty report
    return store.usage_summary(tenant, since, until, by=by)


def sla_report(store: Store, tenant: str, since: datetime, until: datetime) -> SlaReport:
    """The tenant's SLA report for the window, against its targets as they are now."""
    if until - since > SLA_MAX_WINDOW:
        raise Invalid("since", f"an SLA report covers at most {SLA_MAX_WINDOW.days} days; "
                               f"ask for several windows")
    targets = store.get_tenant(tenant).slo  # an unknown tenant is a 404, not an empty report
    return sla.sla_report(store.usage_records(tenant, since, until), tenant=tenant,
                          targets=targets, since=since, until=until)


def usage_csv(store: Store, since: datetime, until: datetime, tenant: str | None) -> str:
    """The ledger records in the window as CSV. Built in memory: an export covers one window
    an operator asked for, not the whole ledger."""
    if tenant is not None:
        store.get_tenant(tenant)
    out = io.StringIO()
    store.export_csv(out, since, until, tenant=tenant)
    return out.getvalue()
