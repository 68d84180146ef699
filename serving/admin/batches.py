"""Batch jobs as operators see them: every tenant's batches listed (by tenant and status) and
any cancelled, for the platform's admins under /admin/v1; a tenant's own, for its
admin-scoped keys, under /tenant/v1 (another tenant's batch is as missing as one never made).
The batches are the Batch API's (serving.batch); a cancel is the same move as a tenant's own,
recorded in the audit log as the calling key's."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import Field, StrictStr

from serving.admin.protocol import StrictModel
from serving.batch import batch_store as batches
from serving.batch.files.rules import shown
from serving.batch.lifecycle import BatchStatus, cannot_cancel
from serving.batch.protocol import LIST_LIMIT, OperatorBatch, OperatorBatchList
from serving.tenancy import Forbidden, Invalid, KeyScope, NotFound, Principal, Store

LEAST, MOST, DEFAULT = LIST_LIMIT  # as the Batch API pages: 1 to 100, 20 by default


class BatchQuery(StrictModel):
    """A page of batches, newest first: those after `after` (the previous page's `last_id`),
    only those in `status` when given."""

    status: BatchStatus | None = None
    after: StrictStr | None = Field(None, pattern=batches.BATCH_ID.pattern)
    limit: int = Field(DEFAULT, ge=LEAST, le=MOST)


class OperatorBatchQuery(BatchQuery):
    """As a tenant's, and `tenant` keeps that tenant's batches only."""

    tenant: StrictStr | None = None


# What the routes do, synchronously (each runs in one worker thread). `whose`: the tenant
# whose batches the caller may see, None for the platform's operators (every tenant's).


def shown_batch(store: Store, batch: batches.Batch) -> OperatorBatch:
    _, completed, failed = batches.counts(store, batch.id)
    return OperatorBatch.of(batch, completed, failed)


def list_batches(store: Store, whose: str | None, query: BatchQuery) -> OperatorBatchList:
    if whose is None and isinstance(query, OperatorBatchQuery) and query.tenant is not None:
        store.get_tenant(query.tenant)  # an unknown tenant is a 404, not an empty page
        whose = query.tenant
    statuses = () if query.status is None else (query.status,)
    found, more = batches.page(store, whose, after=query.after, limit=query.limit,
                               statuses=statuses)
    return OperatorBatchList.of([shown_batch(store, b) for b in found], more)


def _missing(batch_id: str) -> NotFound:
    return NotFound(f"batch_id: no batch with id {shown(batch_id)}")


def retrieve_batch(store: Store, whose: str | None, batch_id: str) -> OperatorBatch:
    found = batches.find(store, whose, batch_id)
    if found is None:
        raise _missing(batch_id)
    return shown_batch(store, found)


def cancel_batch(acting: Store, whose: str | None, batch_id: str) -> OperatorBatch:
    """The Batch API's cancel: running lines finish, the rest end `batch_cancelled`."""
    after = batches.cancel(acting, whose, batch_id)
    if after is None:
        raise _missing(batch_id)
    if isinstance(after, BatchStatus):
        raise Invalid("batch_id", cannot_cancel(after))
    return shown_batch(acting, after)


# The routes


def add_operator_batch_routes(router: APIRouter, store: Store,
                              acting: Callable[..., Awaitable[Store]]) -> None:
    """/batches on the admin router (whose dependencies admit the platform's admins only)."""
    Acting = Annotated[Store, Depends(acting)]

    @router.get("/batches")
    async def list_all(query: Annotated[OperatorBatchQuery, Query()]) -> OperatorBatchList:
        return await asyncio.to_thread(list_batches, store, None, query)

    @router.get("/batches/{batch_id}")
    async def retrieve_any(batch_id: str) -> OperatorBatch:
        return await asyncio.to_thread(retrieve_batch, store, None, batch_id)

    @router.post("/batches/{batch_id}/cancel")
    async def cancel_any(batch_id: str, acting_store: Acting) -> OperatorBatch:
        return await asyncio.to_thread(cancel_batch, acting_store, None, batch_id)


def tenant_admin(caller: Principal) -> str:
    """The caller's tenant, for one of its admin-scoped keys."""
    if caller.scope != KeyScope.ADMIN:
        raise Forbidden(f"key {caller.key_prefix}... is {caller.scope}-scoped; managing "
                        "batches here needs one of your tenant's admin-scoped keys")
    return caller.tenant


def add_tenant_batch_routes(router: APIRouter, store: Store,
                            caller_of: Callable[..., Awaitable[Principal]],
                            acting: Callable[..., Awaitable[Store]]) -> None:
    """/batches on the self-service router: the caller's tenant's own batches."""
    Caller = Annotated[Principal, Depends(caller_of)]
    Acting = Annotated[Store, Depends(acting)]

    @router.get("/batches")
    async def list_mine(caller: Caller,
                        query: Annotated[BatchQuery, Query()]) -> OperatorBatchList:
        return await asyncio.to_thread(list_batches, store, tenant_admin(caller), query)

    @router.get("/batches/{batch_id}")
    async def retrieve_mine(batch_id: str, caller: Caller) -> OperatorBatch:
        return await asyncio.to_thread(retrieve_batch, store, tenant_admin(caller), batch_id)

    @router.post("/batches/{batch_id}/cancel")
    async def cancel_mine(batch_id: str, caller: Caller, acting_store: Acting) -> OperatorBatch:
        return await asyncio.to_thread(cancel_batch, acting_store, tenant_admin(caller),
                                       batch_id)
