"""The OpenAI routes, each one call into the pipeline, and the model list."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from serving.gateway.pipeline import Gateway, Refusal, authenticate, store_unavailable


def build_openai_router(gateway: Gateway) -> APIRouter:
    router = APIRouter()
    started = int(time.time())

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await gateway.handle(request, "chat")

    @router.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await gateway.handle(request, "completion")

    @router.get("/v1/models")
    async def list_models(request: Request) -> Response:
        try:
            principal = await authenticate(gateway.access, request)
            visible = await gateway.access.visible_endpoints(principal)
        except Refusal as refusal:
            return refusal.response
        except Exception as exc:
            return store_unavailable(exc).response
        endpoints = gateway.endpoints
        names = [name for name in endpoints if name in visible]
        cards = await asyncio.gather(*(endpoints[n].card() for n in names), return_exceptions=True)
        data = []
        for name, card in zip(names, cards):
            entry = {"id": name, "object": "model", "created": started, "owned_by": "aifactory"}
            if isinstance(card, dict):
                entry.update(card)
            # The endpoint's name is its identity to tenants; where its weights lie on the
            # partition's disks is not theirs to know.
            entry["root"] = name
            data.append(entry)
        return JSONResponse({"object": "list", "data": data})

    return router
