"""Tenants' LoRA adapters over HTTP: the platform's admins register, list, show and delete
any tenant's under /admin/v1/adapters; a tenant manages its own under /tenant/v1/adapters
(reads with any of its keys, writes with an admin-scoped one), where another tenant's
adapter answers exactly as a missing one. Each write is in the audit log as the calling
key's. A registration is checked against the endpoint's card (its base model folder and
max_lora_rank) before anything is stored."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from serving.admin.adapter_protocol import (
    AdapterDeleted,
    AdapterList,
    AdapterOut,
    AdapterQuery,
    AdapterRegister,
    OperatorAdapterList,
    OperatorAdapterOut,
    OperatorAdapterQuery,
    OperatorAdapterRegister,
)
from serving.catalogue import adapter_store as adapters
from serving.catalogue.registration import check_folder, folder_path
from serving.tenancy import Forbidden, Invalid, KeyScope, NotFound, Principal, Store
from serving.tenancy import validation as check

# The endpoint's card by name, None for an endpoint this platform does not serve: "root" is
# its base model folder, the largest adapter rank its engine takes is "max_lora_rank" or
# "lora"."max_lora_rank" (absent or None: LoRA not enabled there).
EndpointCard = Callable[[str], Awaitable[Mapping[str, Any] | None]]
# The folder a tenant may register adapters from (None: anywhere the gateway can read).
AdapterRoot = Callable[[str], str | None]


def card_facts(endpoint: str, card: Mapping[str, Any] | None) -> tuple[str, int | None]:
    """The base model folder and max_lora_rank a card gives; NotFound without a card."""
    if card is None:
        raise NotFound(f"endpoint: no endpoint named {endpoint!r}")
    root = card.get("root")
    if not isinstance(root, str) or not root:
        raise Invalid("endpoint", f"{endpoint!r} names no model folder to check adapters "
                                  "against")
    lora = card.get("lora")
    rank = card.get("max_lora_rank", lora.get("max_lora_rank") if isinstance(lora, Mapping)
                    else None)
    if isinstance(rank, bool) or not isinstance(rank, int | None):
        rank = None  # a card of another shape enables no LoRA we can rely on
    return root, rank


def preflight(store: Store, tenant: str, endpoint: str, name: str) -> None:
    """The cheap refusals before any folder is read: an unknown tenant or endpoint, one the
    tenant may not call (as missing), a name that is a model id already."""
    if not store.can_use(tenant, endpoint):
        raise NotFound(f"endpoint: no endpoint named {endpoint!r}")
    adapters.ensure_free(store, name)


async def register(acting: Store, endpoint_card: EndpointCard | None, tenant: str,
                   body: AdapterRegister, root: str | None = None) -> adapters.Adapter:
    """Checks in the order of their cost, the folder read off the event loop, then one
    insert (which checks tenant, endpoint and name again, in its transaction)."""
    name = check.name("name", body.name)
    endpoint = check.name("endpoint", body.endpoint)
    path = folder_path(body.path)
    await asyncio.to_thread(preflight, acting, tenant, endpoint, name)
    if endpoint_card is None:
        raise Invalid("endpoint", "this platform serves no endpoints adapters can run on")
    try:
        card = await endpoint_card(endpoint)
    except Exception as exc:  # its engine away or starting: nothing to check against yet
        raise HTTPException(503, f"endpoint {endpoint!r} cannot give its card now "
                                 f"({type(exc).__name__}); retry shortly") from exc
    base_root, max_lora_rank = card_facts(endpoint, card)
    facts = await asyncio.to_thread(check_folder, path, base_root, max_lora_rank, root=root)
    return await asyncio.to_thread(adapters.register_adapter, acting, name=name, tenant=tenant,
                                   endpoint=endpoint, path=path, facts=facts)


def listed(store: Store, tenant: str | None, endpoint: str | None) -> list[adapters.Adapter]:
    """An unknown tenant or endpoint in a filter is a 404, not an empty list."""
    if tenant is not None:
        store.get_tenant(tenant)
    if endpoint is not None:
        store.get_endpoint(endpoint)
    return adapters.list_adapters(store, tenant=tenant, endpoint=endpoint)


def add_operator_adapter_routes(router: APIRouter, store: Store,
                                acting: Callable[..., Awaitable[Store]],
                                endpoint_card: EndpointCard | None) -> None:
    """/adapters on the admin router (whose dependencies admit the platform's admins only)."""
    Acting = Annotated[Store, Depends(acting)]
    run = asyncio.to_thread

    @router.post("/adapters", status_code=201)
    async def register_any(body: OperatorAdapterRegister,
                           acting_store: Acting) -> OperatorAdapterOut:
        return OperatorAdapterOut.of(await register(acting_store, endpoint_card,
                                                    check.name("tenant", body.tenant), body))

    @router.get("/adapters")
    async def list_any(query: Annotated[OperatorAdapterQuery, Query()]) -> OperatorAdapterList:
        found = await run(listed, store, query.tenant, query.endpoint)
        return OperatorAdapterList(data=[OperatorAdapterOut.of(a) for a in found])

    @router.get("/adapters/{name}")
    async def show_any(name: str) -> OperatorAdapterOut:
        return OperatorAdapterOut.of(await run(adapters.get_adapter, store, name))

    @router.delete("/adapters/{name}")
    async def delete_any(name: str, acting_store: Acting) -> AdapterDeleted:
        gone = await run(adapters.delete_adapter, acting_store, name)
        return AdapterDeleted(id=gone.name)


def tenant_admin(caller: Principal) -> str:
    if caller.scope != KeyScope.ADMIN:
        raise Forbidden(f"key {caller.key_prefix}... is {caller.scope}-scoped; registering "
                        "or deleting adapters needs one of your tenant's admin-scoped keys")
    return caller.tenant


def add_tenant_adapter_routes(router: APIRouter, store: Store,
                              caller_of: Callable[..., Awaitable[Principal]],
                              acting: Callable[..., Awaitable[Store]],
                              endpoint_card: EndpointCard | None,
                              adapter_root: AdapterRoot | None = None) -> None:
    """/adapters on the self-service router: the caller's tenant's own adapters."""
    Caller = Annotated[Principal, Depends(caller_of)]
    Acting = Annotated[Store, Depends(acting)]
    run = asyncio.to_thread

    @router.post("/adapters", status_code=201)
    async def register_mine(body: AdapterRegister, caller: Caller,
                            acting_store: Acting) -> AdapterOut:
        tenant = tenant_admin(caller)
        root = None if adapter_root is None else adapter_root(tenant)
        return AdapterOut.of(await register(acting_store, endpoint_card, tenant, body, root))

    @router.get("/adapters")
    async def list_mine(caller: Caller, query: Annotated[AdapterQuery, Query()]) -> AdapterList:
        found = await run(adapters.list_adapters, store, tenant=caller.tenant,
                          endpoint=query.endpoint)
        return AdapterList(data=[AdapterOut.of(a) for a in found])

    @router.get("/adapters/{name}")
    async def show_mine(name: str, caller: Caller) -> AdapterOut:
        return AdapterOut.of(await run(adapters.get_adapter, store, name, tenant=caller.tenant))

    @router.delete("/adapters/{name}")
    async def delete_mine(name: str, caller: Caller, acting_store: Acting) -> AdapterDeleted:
        gone = await run(adapters.delete_adapter, acting_store, name,
                         tenant=tenant_admin(caller))
        return AdapterDeleted(id=gone.name)
