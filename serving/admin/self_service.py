"""Tenant self-service over HTTP: a tenant's own endpoints, quota and usage, read with any of
its own keys; the audit log's entries about it and its batch jobs (listed, cancelled), with
its admin-scoped keys; its LoRA adapters (registered and deleted with admin-scoped keys).
Mounted at /tenant/v1; it never shows another tenant's data."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from observability.sla import SlaReport
from serving.admin import operations
from serving.admin.adapters import AdapterRoot, EndpointCard, add_tenant_adapter_routes
from serving.admin.batches import add_tenant_batch_routes
from serving.admin.errors import AdminRoute
from serving.admin.protocol import (
    AuditList,
    QuotaOut,
    SlaQuery,
    TenantAuditQuery,
    UsageOut,
    UsageQuery,
)
from serving.admin.router import acting_store
from serving.tenancy import Forbidden, KeyScope, Principal, Store, Unauthenticated, audit
from serving.tenancy.store import utc_now

_bearer = HTTPBearer(auto_error=False, description="Any key of the tenant: afk_...")


class TenantRoute(AdminRoute):
    key_hint = "one of your tenant's keys"


class TenantEndpointOut(BaseModel):
    """An endpoint as the tenant sees it: no owner or grants of others, its own quota there
    (a null limit is unlimited; the tenant-wide quota applies as well)."""

    object: Literal["endpoint"] = "endpoint"
    name: str
    shared: bool
    created_at: datetime
    quota: QuotaOut


class TenantEndpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TenantEndpointOut]


def tenant_principal(store: Store) -> Callable[..., Awaitable[Principal]]:
    """401 without a usable key, 403 when its tenant is suspended; any scope is accepted."""

    async def require_key(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            raise Unauthenticated("missing")
        return await asyncio.to_thread(store.authenticate, credentials.credentials)

    return require_key


def build_tenant_router(store: Store, *, clock: Callable[[], datetime] = utc_now,
                        endpoint_card: EndpointCard | None = None,
                        adapter_root: AdapterRoot | None = None) -> APIRouter:
    """The self-service routes, with paths relative to where the app mounts them (/tenant/v1).
    `endpoint_card` and `adapter_root`: see serving.admin.adapters."""
    caller_of = tenant_principal(store)
    router = APIRouter(route_class=TenantRoute, tags=["tenant"])
    Caller = Annotated[Principal, Depends(caller_of)]

    @router.get("/endpoints")
    async def my_endpoints(caller: Caller) -> TenantEndpointList:
        def read() -> TenantEndpointList:
            return TenantEndpointList(data=[
                TenantEndpointOut(name=e.name, shared=e.shared, created_at=e.created_at,
                                  quota=QuotaOut.of(store.get_quota(caller.tenant, e.name)))
                for e in store.list_endpoints(usable_by=caller.tenant)])

        return await asyncio.to_thread(read)

    @router.get("/quota")
    async def my_quota(caller: Caller) -> QuotaOut:
        return QuotaOut.of(await asyncio.to_thread(store.get_quota, caller.tenant))

    @router.get("/usage")
    async def my_usage(caller: Caller, query: Annotated[UsageQuery, Query()]) -> UsageOut:
        since, until = operations.window(query.since, query.until, clock())
        buckets = await asyncio.to_thread(store.usage_summary, caller.tenant, since, until,
                                          by=query.by)
        return UsageOut.of(caller.tenant, since, until, query.by, buckets)

    @router.get("/sla")
    async def my_sla(caller: Caller, query: Annotated[SlaQuery, Query()]) -> SlaReport:
        since, until = operations.window(query.since, query.until, clock())
        return await asyncio.to_thread(operations.sla_report, store, caller.tenant, since,
                                       until)

    @router.get("/audit")
    async def my_audit(caller: Caller, query: Annotated[TenantAuditQuery, Query()]) -> AuditList:
        """The audit log's entries about this tenant, for its admin-scoped keys."""
        if caller.scope != KeyScope.ADMIN:
            raise Forbidden(f"key {caller.key_prefix}... is {caller.scope}-scoped; the audit "
                            "log needs one of your tenant's admin-scoped keys")
        page = await asyncio.to_thread(audit.read, store.engine, query.query(caller.tenant))
        return AuditList.of(audit.AuditPage([e.seen_by(caller.tenant) for e in page.entries],
                                            page.has_more))

    acting = acting_store(store, caller_of)
    add_tenant_batch_routes(router, store, caller_of, acting)
    add_tenant_adapter_routes(router, store, caller_of, acting, endpoint_card, adapter_root)
    return router
