"""The OpenAI routes (and vLLM's tokenizer and pooling routes), each one call into the
pipeline, and the model list."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from serving.gateway import responses
from serving.gateway.exchange import Refusal
from serving.gateway.pipeline import (
    ENDPOINT_NAME,
    Gateway,
    model_not_found,
)
from serving.gateway.pipeline import (
    for_caller as pipeline_for_caller,
)
from serving.tenancy import Principal, stored_responses


def build_openai_router(gateway: Gateway) -> APIRouter:
    router = APIRouter()
    started = int(time.time())

    async def for_caller(request: Request, read: Callable[[Principal], Awaitable[Any]]) -> Any:
        return await pipeline_for_caller(gateway.access, request, read)

    def stored(call: Callable[..., Any], response_id: str) -> Callable[[Principal], Any]:
        return lambda caller: asyncio.to_thread(call, gateway.access.store, caller.tenant,
                                                response_id)

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await gateway.handle(request, "chat")

    @router.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await gateway.handle(request, "completion")

    @router.post("/v1/responses")
    async def create_response(request: Request) -> Response:
        return await gateway.handle(request, "responses")

    @router.get("/v1/responses/{response_id:path}")
    async def retrieve_response(response_id: str, request: Request) -> Response:
        """A response the caller's tenant stored; any other id answers 404."""
        try:
            found = await for_caller(request, stored(stored_responses.find, response_id))
        except Refusal as refusal:
            return refusal.response
        if found is None:
            return responses.not_found(response_id)
        return JSONResponse(found.response)

    @router.delete("/v1/responses/{response_id:path}")
    async def delete_response(response_id: str, request: Request) -> Response:
        try:
            gone = await for_caller(request, stored(stored_responses.remove, response_id))
        except Refusal as refusal:
            return refusal.response
        if not gone:
            return responses.not_found(response_id)
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})

    @router.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        return await gateway.handle(request, "embedding")

    # vLLM's own shapes (no OpenAI counterpart), as `vllm serve` answers them; `model` is
    # required here, since it says which of the tenant's endpoints tokenizes.
    @router.post("/tokenize")
    async def tokenize(request: Request) -> Response:
        return await gateway.handle(request, "tokenize")

    @router.post("/detokenize")
    async def detokenize(request: Request) -> Response:
        return await gateway.handle(request, "detokenize")

    # vLLM's pooling routes, at every path `vllm serve` gives them; whether an endpoint
    # pools, scores or reranks is its model's to say (vLLM's own rules, serving.engine).
    @router.post("/pooling")
    async def pooling(request: Request) -> Response:
        return await gateway.handle(request, "pooling")

    @router.post("/score")
    @router.post("/v1/score")
    async def score(request: Request) -> Response:
        return await gateway.handle(request, "score")

    @router.post("/rerank")
    @router.post("/v1/rerank")
    @router.post("/v2/rerank")
    async def rerank(request: Request) -> Response:
        return await gateway.handle(request, "rerank")

    async def model_card(name: str) -> dict[str, Any]:
        entry = {"id": name, "object": "model", "created": started, "owned_by": "aifactory"}
        try:
            card = await gateway.endpoints[name].card()
        except Exception:  # an engine away: the model is listed by its name alone
            card = {}
        entry.update({k: v for k, v in card.items() if k != "lora"})
        # The endpoint's name is its identity to tenants; where its weights lie on the
        # partition's disks is not theirs to know.
        entry["root"] = name
        return entry

    def adapter_card(adapter) -> dict[str, Any]:
        """A tenant's LoRA adapter, as vLLM lists one: its base endpoint is its parent."""
        return {"id": adapter.name, "object": "model",
                "created": int(adapter.created_at.timestamp()), "owned_by": adapter.tenant,
                "root": adapter.name, "parent": adapter.endpoint}

    async def models_of(caller: Principal) -> tuple[list[str], list]:
        """The endpoints the caller may call, and its own adapters on them."""
        visible = await gateway.access.visible_endpoints(caller)
        adapters = await gateway.access.adapters_of(caller)
        return ([name for name in gateway.endpoints if name in visible],
                [a for a in adapters if a.endpoint in visible and a.endpoint in gateway.endpoints])

    @router.get("/v1/models")
    async def list_models(request: Request) -> Response:
        try:
            names, adapters = await for_caller(request, models_of)
        except Refusal as refusal:
            return refusal.response
        cards = await asyncio.gather(*map(model_card, names))
        return JSONResponse({"object": "list",
                             "data": [*cards, *map(adapter_card, adapters)]})

    @router.get("/v1/models/{model:path}")
    async def retrieve_model(model: str, request: Request) -> Response:
        """One of the tenant's models; any other name answers as a missing one does."""
        try:
            names, adapters = await for_caller(request, models_of)
        except Refusal as refusal:
            return refusal.response
        if ENDPOINT_NAME.fullmatch(model):
            if model in names:
                return JSONResponse(await model_card(model))
            for adapter in adapters:
                if adapter.name == model:
                    return JSONResponse(adapter_card(adapter))
        return model_not_found(model).response

    return router
