"""The admin API's routes: tenants, keys, endpoints and grants, quotas, usage, the audit log,
every tenant's batch jobs and LoRA adapters, the model catalogue. Admin keys only; every
write is recorded in the audit log as the calling key's."""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations at run
# time, and `Depends(require_admin)` names a local it could not find in a string.

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from observability.sla import SlaReport
from serving.admin import operations
from serving.admin.adapters import EndpointCard, add_operator_adapter_routes
from serving.admin.batches import add_operator_batch_routes
from serving.admin.bootstrap import ADMIN_TENANT
from serving.admin.catalogue_models import CatalogueSettings, add_model_routes, host_memory
from serving.admin.errors import AdminRoute
from serving.admin.protocol import (
    AuditList,
    AuditLogQuery,
    CreatedKeyOut,
    EndpointAutoscalingUpdate,
    EndpointCreate,
    EndpointDeleted,
    EndpointList,
    EndpointOut,
    KeyCreate,
    KeyList,
    KeyOut,
    QuotaDeleted,
    QuotaOut,
    QuotaUpdate,
    SlaQuery,
    TenantCreate,
    TenantList,
    TenantOut,
    TenantUpdate,
    UsageCsvQuery,
    UsageOut,
    UsageQuery,
)
from serving.catalogue.model_checks import installed_checks
from serving.tenancy import Forbidden, Invalid, KeyScope, Principal, Store, Unauthenticated, audit
from serving.tenancy.store import utc_now

_bearer = HTTPBearer(auto_error=False, description="An admin-scoped key: afk_...")


def admin_principal(store: Store) -> Callable[..., Awaitable[Principal]]:
    """The dependency every admin route runs first: 401 without a usable key, 403 for a key
    that is not a platform admin's or whose tenant is suspended. A platform admin's key is an
    admin-scoped key of the platform's own tenant (`admin`, made by bootstrap); another
    tenant's admin-scoped key administers that tenant only (its /tenant/v1 routes)."""

    async def require_admin(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            raise Unauthenticated("missing")
        principal = await asyncio.to_thread(store.authenticate, credentials.credentials)
        if principal.scope != KeyScope.ADMIN:
            raise Forbidden(f"key {principal.key_prefix}... is {principal.scope}-scoped; the "
                            "admin API needs an admin-scoped key")
        if principal.tenant != ADMIN_TENANT:
            raise Forbidden(f"key {principal.key_prefix}... administers tenant "
                            f"{principal.tenant!r} only; the admin API needs a key of the "
                            f"platform's tenant {ADMIN_TENANT!r}")
        return principal

    return require_admin


def source_address(request: Request) -> str | None:
    """The address the request came from, as the server gives it (request.client.host).
    X-Forwarded-For is not read here: any client can send one. The server itself (uvicorn,
    also under Ray Serve) takes it only from a peer it trusts as a proxy, FORWARDED_ALLOW_IPS,
    by default loopback: so a local HAProxy's forwarded address counts, a remote client's
    header does not."""
    return None if request.client is None else request.client.host


def acting_store(store: Store, principal: Callable[..., Awaitable[Principal]],
                 ) -> Callable[..., Awaitable[Store]]:
    """A dependency giving the store as the caller's: each write it makes is recorded in the
    audit log with the caller's key and address."""

    async def acting(request: Request,
                     caller: Annotated[Principal, Depends(principal)]) -> Store:
        return store.acting_as(audit.Actor.of(caller, source_address(request)))

    return acting


class EndpointDeployer(Protocol):
    """The platform's side of endpoints created with a `deployment` (in deployments/)."""

    async def check(self, name: str, deployment: dict[str, Any]) -> dict[str, Any]:
        """The deployment as it will run; Invalid or Conflict if the platform cannot run
        it (a bad field, a model it cannot find, no room left in the partition)."""

    async def deploy(self, name: str, deployment: dict[str, Any]) -> None: ...

    async def remove(self, name: str) -> None:
        """Stop routing to it and drain it: requests in flight finish."""

    async def check_autoscaling(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """The stored deployment of `name` with its autoscaling block changed, as it will
        run; Invalid or Conflict as for `check` (or when `name` has no block)."""

    async def update(self, name: str, deployment: dict[str, Any]) -> None:
        """Called once `name`'s changed deployment is in the store."""

    # Optional: `accelerator_memory() -> dict[str, int]`, the bytes of one device of the
    # partition's accelerator kind, which the model catalogue's sizing proposes against.


def build_admin_router(store: Store, *, deployer: EndpointDeployer | None = None,
                       catalogue: CatalogueSettings | None = None,
                       clock: Callable[[], datetime] = utc_now,
                       endpoint_card: EndpointCard | None = None) -> APIRouter:
    """The admin routes, with paths relative to where the app mounts them (/admin/v1).
    Without a `deployer`, endpoints created here are registered only; without an
    `endpoint_card` (each served endpoint's card), no LoRA adapter can be registered."""
    require_admin = admin_principal(store)
    router = APIRouter(route_class=AdminRoute, dependencies=[Depends(require_admin)],
                       tags=["admin"])
    run = asyncio.to_thread
    # The store for writes: as the caller's, so each write is recorded in the audit log.
    Acting = Annotated[Store, Depends(acting_store(store, require_admin))]

    # Tenants

    @router.post("/tenants", status_code=201)
    async def create_tenant(body: TenantCreate, acting: Acting) -> TenantOut:
        slo = None if body.slo is None else body.slo.changes()  # left out: the default
        return TenantOut.of(await run(acting.create_tenant, body.name, priority=body.priority,
                                      slo=slo))

    @router.get("/tenants")
    async def list_tenants() -> TenantList:
        return TenantList(data=[TenantOut.of(t) for t in await run(store.list_tenants)])

    @router.get("/tenants/{name}")
    async def get_tenant(name: str) -> TenantOut:
        return TenantOut.of(await run(store.get_tenant, name))

    @router.patch("/tenants/{name}")
    async def update_tenant(name: str, body: TenantUpdate, acting: Acting,
                            caller: Annotated[Principal, Depends(require_admin)]) -> TenantOut:
        return TenantOut.of(await run(operations.update_tenant, acting, name,
                                      priority=body.priority, status=body.status,
                                      caller_tenant=caller.tenant,
                                      slo_changes=None if body.slo is None
                                      else body.slo.changes()))

    # API keys

    @router.post("/tenants/{name}/keys", status_code=201)
    async def create_key(name: str, body: KeyCreate, acting: Acting) -> CreatedKeyOut:
        created = await run(acting.create_key, name, scope=body.scope, expires_at=body.expires_at)
        return CreatedKeyOut.of_created(created, clock())

    @router.get("/tenants/{name}/keys")
    async def list_keys(name: str) -> KeyList:
        now = clock()
        return KeyList(data=[KeyOut.of(key, now) for key in await run(store.list_keys, name)])

    @router.delete("/keys/{key_id}")
    async def revoke_key(key_id: int, acting: Acting) -> KeyOut:
        return KeyOut.of(await run(operations.revoke_key, acting, key_id), clock())

    # Endpoints and grants

    @router.post("/endpoints", status_code=201)
    async def create_endpoint(body: EndpointCreate, acting: Acting) -> EndpointOut:
        if body.deployment is None:
            return EndpointOut.of(await run(acting.create_endpoint, body.name, owner=body.owner))
        if deployer is None:
            raise Invalid("deployment", "this platform does not deploy endpoints through the "
                                        "admin API; declare it in the platform config")
        deployment = await deployer.check(body.name, body.deployment)
        endpoint = await run(acting.create_endpoint, body.name, owner=body.owner,
                             deployment=deployment)
        try:
            await deployer.deploy(endpoint.name, deployment)
        except BaseException:  # undone, and the log says so: created, then deleted
            await run(acting.delete_endpoint, endpoint.name)
            raise
        return EndpointOut.of(endpoint)

    @router.patch("/endpoints/{name}/autoscaling")
    async def update_endpoint_autoscaling(name: str, body: EndpointAutoscalingUpdate,
                                          acting: Acting) -> EndpointOut:
        if deployer is None:
            raise Invalid("autoscaling", "this platform does not deploy endpoints through the "
                                         "admin API; declare it in the platform config")
        deployment = await deployer.check_autoscaling(name, body.changes())
        endpoint = await run(acting.set_endpoint_deployment, name, deployment)
        await deployer.update(name, deployment)
        return EndpointOut.of(endpoint)

    @router.get("/endpoints")
    async def list_endpoints() -> EndpointList:
        return EndpointList(data=[EndpointOut.of(e) for e in await run(store.list_endpoints)])

    @router.get("/endpoints/{name}")
    async def get_endpoint(name: str) -> EndpointOut:
        return EndpointOut.of(await run(store.get_endpoint, name))

    @router.delete("/endpoints/{name}")
    async def delete_endpoint(name: str, acting: Acting) -> EndpointDeleted:
        endpoint = await run(store.get_endpoint, name)
        # Gone from the store first: new requests answer 404 from here on.
        await run(acting.delete_endpoint, name)
        if endpoint.deployment is not None and deployer is not None:
            await deployer.remove(name)
        return EndpointDeleted(name=name)

    @router.put("/endpoints/{name}/grants/{tenant}")
    async def grant(name: str, tenant: str, acting: Acting) -> EndpointOut:
        return EndpointOut.of(await run(acting.grant, name, tenant))

    @router.delete("/endpoints/{name}/grants/{tenant}")
    async def revoke_grant(name: str, tenant: str, acting: Acting) -> EndpointOut:
        return EndpointOut.of(await run(acting.revoke_grant, name, tenant))

    # Quotas: the tenant-wide one, and one per endpoint the tenant may use

    async def set_quota(acting: Store, tenant: str, endpoint: str | None,
                        body: QuotaUpdate) -> QuotaOut:
        return QuotaOut.of(await run(operations.update_quota, acting, tenant, endpoint,
                                     body.changes()))

    async def get_quota(tenant: str, endpoint: str | None) -> QuotaOut:
        return QuotaOut.of(await run(store.get_quota, tenant, endpoint))

    async def clear_quota(acting: Store, tenant: str, endpoint: str | None) -> QuotaDeleted:
        await run(acting.clear_quota, tenant, endpoint)
        return QuotaDeleted(tenant=tenant, endpoint=endpoint)

    @router.put("/tenants/{name}/quota")
    async def set_tenant_quota(name: str, body: QuotaUpdate, acting: Acting) -> QuotaOut:
        return await set_quota(acting, name, None, body)

    @router.put("/tenants/{name}/endpoints/{endpoint}/quota")
    async def set_endpoint_quota(name: str, endpoint: str, body: QuotaUpdate,
                                 acting: Acting) -> QuotaOut:
        return await set_quota(acting, name, endpoint, body)

    @router.get("/tenants/{name}/quota")
    async def get_tenant_quota(name: str) -> QuotaOut:
        return await get_quota(name, None)

    @router.get("/tenants/{name}/endpoints/{endpoint}/quota")
    async def get_endpoint_quota(name: str, endpoint: str) -> QuotaOut:
        return await get_quota(name, endpoint)

    @router.delete("/tenants/{name}/quota")
    async def clear_tenant_quota(name: str, acting: Acting) -> QuotaDeleted:
        return await clear_quota(acting, name, None)

    @router.delete("/tenants/{name}/endpoints/{endpoint}/quota")
    async def clear_endpoint_quota(name: str, endpoint: str, acting: Acting) -> QuotaDeleted:
        return await clear_quota(acting, name, endpoint)

    # Usage

    @router.get("/tenants/{name}/usage")
    async def usage(name: str, query: Annotated[UsageQuery, Query()]) -> UsageOut:
        since, until = operations.window(query.since, query.until, clock())
        buckets = await run(operations.usage_buckets, store, name, since, until, query.by)
        return UsageOut.of(name, since, until, query.by, buckets)

    @router.get("/tenants/{name}/sla")
    async def sla(name: str, query: Annotated[SlaQuery, Query()]) -> SlaReport:
        since, until = operations.window(query.since, query.until, clock())
        return await run(operations.sla_report, store, name, since, until)

    @router.get("/usage.csv", response_class=Response)
    async def usage_csv(query: Annotated[UsageCsvQuery, Query()]) -> Response:
        since, until = operations.window(query.since, query.until, clock())
        text = await run(operations.usage_csv, store, since, until, query.tenant)
        return Response(text, media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": 'attachment; filename="usage.csv"'})

    # The audit log

    @router.get("/audit")
    async def audit_log(query: Annotated[AuditLogQuery, Query()]) -> AuditList:
        return AuditList.of(await run(audit.read, store.engine, query.query(query.tenant)))

    # Batch jobs: every tenant's, listed and cancelled

    add_operator_batch_routes(router, store, acting_store(store, require_admin))
    add_operator_adapter_routes(router, store, acting_store(store, require_admin), endpoint_card)

    # The model catalogue: by default checked against the installed vLLM and sized for the
    # deployer's partition (without one, this node's memory as one CPU).
    if catalogue is None:
        catalogue = CatalogueSettings(installed_checks(), getattr(
            deployer, "accelerator_memory", None) or host_memory)
    add_model_routes(router, store, acting_store(store, require_admin), catalogue)
    return router
