"""The gateway's FastAPI app: the OpenAI routes, health and readiness; every /v1 request is
authenticated, routed by `model` among the endpoints its tenant may use, admitted against its
quotas, and ends in exactly one usage record."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from http import HTTPStatus

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray.serve.exceptions import BackPressureError
from starlette.exceptions import HTTPException as StarletteHTTPException

from observability.metrics import model_label
from observability.tracing import configure_tracing
from serving.gateway import telemetry
from serving.gateway.access import Access, Admitted
from serving.gateway.errors import error_response, from_engine_error, sse_error_event
from serving.gateway.openapi import publish_openai_schema
from serving.gateway.routing import (
    EndpointOverloaded,
    EndpointTarget,
    EndpointUnavailable,
    EngineCall,
    InFlightBound,
    spread_retry,
)
from serving.tenancy import Forbidden, Outcome, Principal, TenancyError, Unauthenticated

logger = logging.getLogger(__name__)

# Bodies above this are refused before parsing (prompts of a 128k-token context fit easily).
MAX_BODY_BYTES = 8 * 1024 * 1024
READY_TIMEOUT_S = 5.0
REQUEST_ID_HEADER = "x-request-id"
DONE = "data: [DONE]\n\n"


class Refusal(Exception):
    """A request refused before it reached an engine, as the response to send."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _store_unavailable(exc: Exception) -> Refusal:
    logger.warning("tenancy store or counters unavailable: %r", exc)
    return Refusal(error_response(
        503, "the platform's tenancy store is unavailable; retry shortly",
        headers={"retry-after": "1"}))


async def _read_json_object(request: Request) -> dict:
    declared = request.headers.get("content-length")
    too_big = Refusal(error_response(413, f"request body is larger than {MAX_BODY_BYTES} bytes"))
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_big
    raw = bytearray()
    async for part in request.stream():
        raw += part
        if len(raw) > MAX_BODY_BYTES:
            raise too_big
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refusal(error_response(400, f"request body is not valid JSON: {exc}")) from None
    except RecursionError:
        raise Refusal(error_response(400, "request body is nested too deeply")) from None
    if not isinstance(body, dict):
        raise Refusal(error_response(400, "request body must be a JSON object"))
    return body


async def authenticate(access: Access, request: Request) -> Principal:
    try:
        return await access.authenticate(request.headers.get("authorization"))
    except Unauthenticated:
        raise Refusal(error_response(
            401, "Incorrect or missing API key: pass a valid key as 'Authorization: Bearer ...'",
            code="invalid_api_key")) from None
    except Forbidden as exc:
        raise Refusal(error_response(403, str(exc), code="account_deactivated")) from None
    except TenancyError as exc:
        raise Refusal(error_response(400, str(exc))) from None
    except Exception as exc:
        raise _store_unavailable(exc) from None


def _is_usage_chunk(chunk: str) -> bool:
    return '"choices":[]' in chunk and '"usage":{' in chunk


async def _relay(call: EngineCall, first: str | None, access: Access, admitted: Admitted,
                 client_wants_usage: bool, bound: InFlightBound) -> AsyncIterator[str]:
    """Forward each SSE event as the engine yields it, take the token counts from the usage
    event, and commit the usage record before the stream's last event. A broken stream ends
    with an error event; a client that goes away cancels the engine request. The first
    token's delay goes to the endpoint's `bound` (is its queue standing?)."""
    usage: dict | None = None
    chunks = 0
    outcome = Outcome.OK
    try:
        pending = [first] if first is not None else []
        source = call.chunks()
        while True:
            if pending:
                chunk = pending.pop()
            else:
                try:
                    chunk = await source.__anext__()
                except StopAsyncIteration:
                    break
            if chunk == DONE:
                break
            if _is_usage_chunk(chunk):
                usage = json.loads(chunk[len("data: "):])["usage"]
                if not client_wants_usage:
                    continue
            elif chunk.startswith('data: {"error"'):
                outcome = Outcome.ERROR
            else:
                chunks += 1
                now = time.monotonic()
                if admitted.first_token_at is None:
                    admitted.first_token_at = now
                    bound.delay.observe(now, now - admitted.started)
                    if admitted.span is not None:
                        telemetry.describe_response(admitted.span, _event_body(chunk))
                admitted.last_token_at = now
                admitted.content_events = chunks
            yield chunk
        await _finish_stream(access, admitted, outcome, usage, chunks)
        yield DONE
    except asyncio.CancelledError:
        call.cancel()
        # The client is gone: still settle and record, outside this cancelled task.
        asyncio.get_running_loop().create_task(
            _finish_stream(access, admitted, Outcome.CLIENT_CANCELLED, usage, chunks))
        raise
    except Exception as exc:  # the engine failed mid-stream: say so instead of cutting silently
        logger.warning("stream broke: %r", exc)
        call.cancel()
        await _finish_stream(access, admitted, Outcome.ERROR, usage, chunks)
        yield sse_error_event(HTTPStatus.SERVICE_UNAVAILABLE, f"the engine failed mid-stream: {exc}")
        yield DONE
    finally:
        call.cancel()


async def _finish_stream(access: Access, admitted: Admitted, outcome: Outcome,
                         usage: dict | None, chunks: int) -> None:
    try:
        if usage is not None:
            await access.finish(admitted, outcome, usage["prompt_tokens"],
                                usage["completion_tokens"])
        else:  # no usage event (cancelled or broken): one token per content event, as streamed
            await access.finish(admitted, outcome, None, chunks)
    finally:
        # The response went out as 200; a stream that broke says so in error.type.
        telemetry.end_span(admitted.span, HTTPStatus.OK, error=None if outcome in (
            Outcome.OK, Outcome.CLIENT_CANCELLED) else str(outcome))


def _event_body(chunk: str) -> dict:
    try:
        body = json.loads(chunk[len("data: "):])
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


REPLICA_HEADER = "x-aifactory-replica"


def build_openai_router(endpoints: Mapping[str, EndpointTarget], access: Access,
                        replica: str | None = None) -> APIRouter:
    """`replica` names this gateway replica in a response header, for operators tracing a
    request through several replicas."""
    router = APIRouter()
    started = int(time.time())

    async def complete(request: Request, kind: str) -> Response:
        """One request under its span: a streamed response ends the span when the stream
        ends, any other response here."""
        span = telemetry.start_request_span(request.headers, kind)
        if span is None:
            return await answer(request, kind, None)
        try:
            response = await answer(request, kind, span)
        except BaseException as exc:
            telemetry.end_span(span, error=type(exc).__name__)
            raise
        if not isinstance(response, StreamingResponse):
            telemetry.end_span(span, response.status_code)
        return response

    async def answer(request: Request, kind: str, span) -> Response:
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        headers = {REQUEST_ID_HEADER: request_id}
        if replica:
            headers[REPLICA_HEADER] = replica
        arrived = time.perf_counter()
        try:
            with telemetry.step(span, "auth"):
                principal = await authenticate(access, request)
            body = await _read_json_object(request)
        except Refusal as refusal:
            refusal.response.headers.update(headers)
            return refusal.response
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error_response(
                400, "you must provide a model parameter (a string)", param="model", headers=headers)
        target = endpoints.get(model)
        try:
            with telemetry.step(span, "routing"):
                allowed = target is not None and await access.may_use(principal, model)
                if allowed:
                    card = await target.card()
            if allowed:
                telemetry.describe_request(span, kind, model, body, principal.tenant)
                # An endpoint too full to serve the request in time refuses it before the
                # tenant's counters are touched: a flood's excess costs no round trips.
                full = target.bound.why_refused(time.monotonic(), principal.slo.ttft_s)
                if full is not None:
                    return await overloaded(
                        access.unadmitted(principal, model, request_id,
                                          model=model_label(card.get("root")), span=span),
                        model, full, headers)
                with telemetry.step(span, "admission"):
                    admitted = await access.admit(principal, model, request_id, body,
                                                  card.get("max_model_len", 0),
                                                  model=model_label(card.get("root")), span=span)
        except Exception as exc:
            response = _store_unavailable(exc).response
            response.headers.update(headers)
            return response
        if not allowed:  # another tenant's endpoint looks exactly like a missing one
            return error_response(
                404, f"The model `{model}` does not exist or you do not have access to it.",
                param="model", code="model_not_found", headers=headers)

        headers.update(admitted.decision.headers())
        # What authentication, access and admission cost this request (W3C Server-Timing).
        headers["server-timing"] = f"admission;dur={(time.perf_counter() - arrived) * 1000:.3f}"
        decision = admitted.decision
        if not decision.admitted:
            await access.finish(admitted, Outcome.REJECTED)
            return error_response(429, decision.reason, code=decision.error_code, headers=headers)

        client_wants_usage = True
        if body.get("stream") is True:
            options = body.get("stream_options")
            client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
            if not client_wants_usage:
                # The ledger needs the engine's exact counts; the usage event is not forwarded.
                body = {**body, "stream_options": {**(options or {}), "include_usage": True}}

        call = target.call(kind, telemetry.with_trace_context(span, body), request_id)
        try:
            head = await call.head()
        except asyncio.CancelledError:
            call.cancel()
            await asyncio.shield(access.finish(admitted, Outcome.CLIENT_CANCELLED))
            raise
        except EndpointUnavailable as exc:
            call.cancel()
            await access.finish(admitted, Outcome.ERROR)
            return error_response(503, str(exc), code="endpoint_unavailable",
                                  headers={**headers, "retry-after": str(exc.retry_after_s)})
        except (EndpointOverloaded, BackPressureError) as exc:
            # The endpoint's bounded queue is full (the gateway's in-flight bound, or Serve's
            # max_queued_requests behind it): refused at once.
            call.cancel()
            return await overloaded(admitted, model, str(exc), headers)
        except Exception as exc:
            call.cancel()
            logger.warning("endpoint %s failed: %r", model, exc)
            await access.finish(admitted, Outcome.ERROR)
            return error_response(
                503, f"endpoint `{model}` is unavailable: {type(exc).__name__}", headers=headers)
        if head["status"] != HTTPStatus.OK:
            await access.finish(admitted, Outcome.ERROR)
            status, err = from_engine_error(head.get("body") or {})
            return JSONResponse(err, status, headers=headers)
        if not head.get("stream"):
            result = head["body"]
            telemetry.describe_response(span, result)
            usage = result.get("usage") or {}
            await access.finish(admitted, Outcome.OK, usage.get("prompt_tokens"),
                                usage.get("completion_tokens", 0))
            return JSONResponse(result, headers=headers)
        return StreamingResponse(
            _relay(call, head.get("first"), access, admitted, client_wants_usage, target.bound),
            media_type="text/event-stream", headers=headers)

    async def overloaded(admitted: Admitted, model: str, why: str,
                         headers: dict[str, str]) -> Response:
        """503 at once for an endpoint too loaded to serve the request in time: no engine
        saw it, its usage record counts no tokens."""
        await access.finish(admitted, Outcome.ERROR, 0, 0)
        return error_response(503, f"endpoint `{model}` is overloaded: {why}; retry shortly",
                              code="endpoint_overloaded",
                              headers={**headers, **spread_retry(1, random.random())})

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await complete(request, "chat")

    @router.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await complete(request, "completion")

    @router.get("/v1/models")
    async def list_models(request: Request) -> Response:
        try:
            principal = await authenticate(access, request)
            visible = await access.visible_endpoints(principal)
        except Refusal as refusal:
            return refusal.response
        except Exception as exc:
            return _store_unavailable(exc).response
        names = [name for name in endpoints if name in visible]
        cards = await asyncio.gather(*(endpoints[n].card() for n in names), return_exceptions=True)
        data = []
        for name, card in zip(names, cards):
            entry = {"id": name, "object": "model", "created": started, "owned_by": "aifactory"}
            if isinstance(card, dict):
                entry.update(card)
            data.append(entry)
        return JSONResponse({"object": "list", "data": data})

    return router


def build_gateway_app(endpoints: Mapping[str, EndpointTarget], access: Access,
                      routers: tuple[tuple[str, APIRouter], ...] = (),
                      replica: str | None = None) -> FastAPI:
    """`routers` are mounted beside the OpenAI routes, e.g. ("/admin/v1", admin router)."""
    configure_tracing("aifactory")  # only when the OTEL_* variables ask for traces
    app = FastAPI(title="AI Factory gateway", version="0.1.0")
    publish_openai_schema(app)  # the /v1 bodies, which the routes read themselves

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        # Unknown paths and wrong methods answer in OpenAI's error shape too.
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    app.include_router(build_openai_router(endpoints, access, replica))
    for prefix, router in routers:
        app.include_router(router, prefix=prefix)

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
