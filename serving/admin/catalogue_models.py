"""The model catalogue on the admin API: /admin/v1/models registers a checked checkpoint
folder, lists and shows entries (with the sizing for the partition's accelerators) and
deletes one no endpoint uses. Platform admins only (the admin router's dependencies);
each write is recorded in the audit log as the calling key's. Not /v1/models: that is the
OpenAI route a tenant lists its callable models with."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from serving.admin.catalogue_protocol import (
    CatalogueListQuery,
    CatalogueModelDeleted,
    CatalogueModelList,
    CatalogueModelOut,
    CatalogueModelQuery,
    CatalogueModelRegister,
)
from serving.catalogue import model_checks, model_store
from serving.catalogue.model_checks import ModelChecks
from serving.catalogue.placement import size
from serving.tenancy import Store
from serving.tenancy import validation as check


def host_memory() -> dict[str, int]:
    """This node's memory as one CPU "device": what a gateway without a partition (no
    endpoint deployer) sizes against."""
    return {"cpu": os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")}


@dataclass(frozen=True)
class CatalogueSettings:
    """The platform's side of the catalogue: the checks a registration runs, and the memory
    of one device of each accelerator kind the partition has (e.g. {"cpu": bytes per slot})."""

    checks: ModelChecks
    devices: Callable[[], dict[str, int]] = host_memory


def register(acting: Store, settings: CatalogueSettings,
             body: CatalogueModelRegister) -> CatalogueModelOut:
    """Cheap refusals first (the name, the owner, the path), then the folder's facts and
    checks (a full read for the digest), then one insert."""
    name = check.name("name", body.name)
    owner = None if body.owner is None else acting.get_tenant(body.owner).name
    digest = model_checks.expected_digest(body.digest)
    version = model_checks.version(body.version)
    model_store.ensure_free(acting, name)
    folder = model_checks.source_folder(body.path)
    facts, architecture = model_checks.inspect(folder, settings.checks, digest)
    entry = model_store.register(acting, name=name, owner=owner, version=version, facts=facts,
                                 architecture=architecture)
    return CatalogueModelOut.of(entry, size(entry, settings.devices()))


def show(store: Store, settings: CatalogueSettings, name: str,
         query: CatalogueModelQuery) -> CatalogueModelOut:
    entry = model_store.get(store, name)
    return CatalogueModelOut.of(entry, size(entry, settings.devices(), query.max_model_len,
                                            query.concurrency))


def add_model_routes(router: APIRouter, store: Store, acting: Callable[..., Awaitable[Store]],
                     settings: CatalogueSettings) -> None:
    """/models on the admin router."""
    Acting = Annotated[Store, Depends(acting)]
    run = asyncio.to_thread

    @router.post("/models", status_code=201)
    async def register_model(body: CatalogueModelRegister,
                             acting_store: Acting) -> CatalogueModelOut:
        return await run(register, acting_store, settings, body)

    @router.get("/models")
    async def list_models(query: Annotated[CatalogueListQuery, Query()]) -> CatalogueModelList:
        entries = await run(model_store.list_models, store, owner=query.owner)
        return CatalogueModelList(data=[CatalogueModelOut.of(e) for e in entries])

    @router.get("/models/{name}")
    async def show_model(name: str, query: Annotated[CatalogueModelQuery, Query()],
                         ) -> CatalogueModelOut:
        return await run(show, store, settings, name, query)

    @router.delete("/models/{name}")
    async def delete_model(name: str, acting_store: Acting) -> CatalogueModelDeleted:
        entry = await run(model_store.delete, acting_store, name)
        return CatalogueModelDeleted(name=entry.name)

