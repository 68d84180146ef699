"""The gateway's FastAPI app: the OpenAI routes (serving.gateway.routes, each a run of the
pipeline in serving.gateway.pipeline), health and readiness, and whatever other routers the
deployment mounts beside them (admin, tenant self-service)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from observability.tracing import configure_tracing
from serving.gateway.access import Access
from serving.gateway.errors import error_response
from serving.gateway.openapi import publish_openai_schema
from serving.gateway.pipeline import Gateway
from serving.gateway.routes import build_openai_router
from serving.gateway.shape import RequestLimits
from serving.targets import EndpointTarget
from serving.tenancy import KeyScope

READY_TIMEOUT_S = 5.0


class Background(Protocol):
    """Work a part runs beside the routes while the app runs (the batch worker)."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...


# A part of the API built on the gateway's own steps: its routes, and its background work.
GatewayPart = Callable[[Gateway], tuple[APIRouter, Background | None]]


async def _is_admin(access: Access, request: Request) -> bool:
    header = request.headers.get("authorization")
    if not header:
        return False
    try:
        return (await access.authenticate(header)).scope == KeyScope.ADMIN
    except Exception:  # unknown, revoked, store away: not an operator, as far as /ready knows
        return False


def build_gateway_app(endpoints: Mapping[str, EndpointTarget], access: Access,
                      routers: tuple[tuple[str, APIRouter], ...] = (),
                      replica: str | None = None,
                      limits: RequestLimits = RequestLimits(),
                      parts: Sequence[GatewayPart] = ()) -> FastAPI:
    """`routers` are mounted beside the OpenAI routes, e.g. ("/admin/v1", admin router);
    `replica` names this gateway replica in each response's x-aifactory-replica header;
    `limits` bound each request body; `parts` are built on this replica's gateway (the
    Batch API: its routes and its worker, run while the app runs)."""
    configure_tracing("aifactory")  # only when the OTEL_* variables ask for traces
    gateway = Gateway(endpoints, access, replica, limits)
    built = [part(gateway) for part in parts]
    background = [work for _, work in built if work is not None]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for work in background:
            work.start()
        yield
        for work in background:
            await work.stop()

    app = FastAPI(title="AI Factory gateway", version="0.1.0", lifespan=lifespan)
    publish_openai_schema(app)  # the /v1 bodies, which the routes read themselves

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        # Unknown paths and wrong methods answer in OpenAI's error shape too.
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    app.include_router(build_openai_router(gateway))
    for router, _ in built:
        app.include_router(router)
    for prefix, router in routers:
        app.include_router(router, prefix=prefix)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        async def check(target: EndpointTarget) -> bool:
            try:
                return await asyncio.wait_for(target.ready(), READY_TIMEOUT_S)
            except Exception:
                return False

        results = await asyncio.gather(*(check(t) for t in endpoints.values()))
        ok = all(results)
        body: dict = {"ready": ok}
        # Which endpoints exist is for operators: anyone else learns the aggregate only.
        if await _is_admin(access, request):
            body["endpoints"] = dict(zip(endpoints, results))
        return JSONResponse(body, 200 if ok else 503)

    return app
