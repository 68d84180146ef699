"""The gateway's FastAPI app: the OpenAI routes, health and readiness, routing by `model`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from serving.gateway.errors import error_response, from_engine_error, sse_error_event
from serving.gateway.routing import EndpointTarget, EngineCall

logger = logging.getLogger(__name__)

# Bodies above this are refused before parsing (prompts of a 128k-token context fit easily).
MAX_BODY_BYTES = 8 * 1024 * 1024
READY_TIMEOUT_S = 5.0
REQUEST_ID_HEADER = "x-request-id"


async def _read_json_object(request: Request) -> dict | JSONResponse:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return error_response(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    raw = bytearray()
    async for part in request.stream():
        raw += part
        if len(raw) > MAX_BODY_BYTES:
            return error_response(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return error_response(400, f"request body is not valid JSON: {exc}")
    except RecursionError:
        return error_response(400, "request body is nested too deeply")
    if not isinstance(body, dict):
        return error_response(400, "request body must be a JSON object")
    return body


async def _stream(call: EngineCall, first: str | None) -> AsyncIterator[str]:
    """Forward each SSE event as the engine yields it; end a broken stream with an error event.

    If the client goes away, Starlette cancels this generator and the engine call is cancelled
    with it, which aborts the request in the engine."""
    try:
        if first is not None:
            yield first
        async for chunk in call.chunks():
            yield chunk
    except asyncio.CancelledError:
        call.cancel()
        raise
    except Exception as exc:  # the engine died mid-stream: say so instead of cutting silently
        logger.warning("stream broke: %r", exc)
        call.cancel()
        yield sse_error_event(HTTPStatus.SERVICE_UNAVAILABLE, f"the engine failed mid-stream: {exc}")
        yield "data: [DONE]\n\n"
    finally:
        call.cancel()


def build_gateway_app(endpoints: Mapping[str, EndpointTarget]) -> FastAPI:
    app = FastAPI(title="AI Factory gateway", version="0.1.0")
    started = int(time.time())

    async def _completion(request: Request, kind: str) -> Response:
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        headers = {REQUEST_ID_HEADER: request_id}
        body = await _read_json_object(request)
        if isinstance(body, JSONResponse):
            return body
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error_response(
                400, "you must provide a model parameter (a string)", param="model", headers=headers
            )
        target = endpoints.get(model)
        if target is None:
            return error_response(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
                headers=headers,
            )

        call = target.call(kind, body, request_id)
        try:
            head = await call.head()
        except asyncio.CancelledError:
            call.cancel()
            raise
        except Exception as exc:
            call.cancel()
            logger.warning("endpoint %s failed: %r", model, exc)
            return error_response(
                503, f"endpoint `{model}` is unavailable: {type(exc).__name__}", headers=headers
            )
        status = head["status"]
        if status != HTTPStatus.OK:
            status, err = from_engine_error(head.get("body") or {})
            return JSONResponse(err, status, headers=headers)
        if not head.get("stream"):
            return JSONResponse(head["body"], headers=headers)
        return StreamingResponse(
            _stream(call, head.get("first")), media_type="text/event-stream", headers=headers
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _completion(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await _completion(request, "completion")

    @app.get("/v1/models")
    async def list_models() -> dict:
        cards = await asyncio.gather(*(t.card() for t in endpoints.values()), return_exceptions=True)
        data = []
        for name, card in zip(endpoints, cards):
            entry = {"id": name, "object": "model", "created": started, "owned_by": "aifactory"}
            if isinstance(card, dict):
                entry.update(card)
            data.append(entry)
        return {"object": "list", "data": data}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        async def check(target: EndpointTarget) -> bool:
            try:
                return await asyncio.wait_for(target.ready(), READY_TIMEOUT_S)
            except Exception:
                return False

        results = await asyncio.gather(*(check(t) for t in endpoints.values()))
        state = dict(zip(endpoints, results))
        ok = all(results)
        return JSONResponse({"ready": ok, "endpoints": state}, 200 if ok else 503)

    return app
