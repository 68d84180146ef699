"""The admin API's window onto the partition autoscaler: every endpoint's latest decision
(target, actual, reason and the signals behind it) and the recent scaling actions."""

# No `from __future__ import annotations`: FastAPI reads the route annotations at run time.

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from serving.admin.errors import AdminRoute
from serving.admin.router import admin_principal
from serving.tenancy import NotFound, Store


def build_autoscaler_router(store: Store,
                            read_view: Callable[[int], dict[str, Any]] | None) -> APIRouter:
    """`read_view(actions)` returns the latest decisions and the last `actions` scaling
    actions; None when no endpoint is autoscaled (the route then answers 404)."""
    router = APIRouter(route_class=AdminRoute, dependencies=[Depends(admin_principal(store))],
                       tags=["admin"])

    @router.get("/autoscaler")
    async def autoscaler(actions: Annotated[int, Query(ge=0, le=1000)] = 50) -> dict[str, Any]:
        if read_view is None:
            raise NotFound("no endpoint of this platform is autoscaled")
        return await asyncio.to_thread(read_view, actions)

    return router
