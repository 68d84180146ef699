"""The steps after admission: the body the engine gets (the tenant's prefix-cache salt, the
usage the ledger needs), the call to the endpoint's engines, and the answer (JSON, or the
relayed stream; a Responses API request's in responses.py). Each refusal here settles the
request's usage record first."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from serving.gateway import responses, telemetry
from serving.gateway.access import Access, Admitted
from serving.gateway.errors import error_response, from_engine_error
from serving.gateway.exchange import Exchange, Refusal, Route, Unserved
from serving.gateway.openai_shape import shaped
from serving.gateway.relay import relay, settle_reply
from serving.gateway.stream_usage import StreamWants, stream_wants
from serving.targets import EndpointOverloaded, EndpointUnavailable, EngineCall
from serving.targets.bound import spread_retry
from serving.tenancy import ErrorClass, Outcome

logger = logging.getLogger(__name__)

# Kinds of request whose prompts go through the engine's prefix cache (pooling models have
# one too: vLLM caches an embedding model's prompts): salted per tenant.
SALTED = frozenset({"chat", "completion", "responses", "embedding", "pooling", "score",
                    "rerank"})
# vLLM's request priority (lower is scheduled first; the platform's engines run vLLM's
# priority scheduler): batch lines after every interactive request waiting on an engine.
INTERACTIVE_PRIORITY, BATCH_PRIORITY = 0, 1
# How soon a request the engines failed is sent again by a sender that resends (a batch line).
FAULT_RETRY_S = 1.0
# Kinds whose streams are chat's and completions' (`data:` events, stream_options, [DONE]).
STREAM_OPTIONS = frozenset({"chat", "completion"})
# Kinds whose bodies are OpenAI's (shaped to its schema); tokenizing, pooling, scoring and
# reranking answer in vLLM's own shapes, as `vllm serve` does.
OPENAI_KINDS = frozenset({"chat", "completion", "embedding"})


def tenant_cache_salt(tenant: str, given: str | None) -> str:
    """vLLM's `cache_salt` for a tenant's request: prefix-cache blocks are shared only between
    requests with the same salt, so one tenant never hits (and never times) another's cached
    prompts (the class of CVE-2025-46570). A client's own salt narrows it further within its
    tenant; it never replaces the tenant's part, so no salt a client picks is another's."""
    return hashlib.sha256(f"{tenant}\0{given or ''}".encode()).hexdigest()


def engine_body(body: dict[str, Any], span: Any, tenant: str, kind: str = "completion",
                priority: int = INTERACTIVE_PRIORITY) -> tuple[dict[str, Any], StreamWants]:
    """The body the engine gets, and what the client asked of the stream's usage. The ledger
    needs the engine's exact counts, also of a stream cut short, so the engine is always
    asked for the final usage event and for running counts in every event. A request's
    prefix-cache salt is its tenant's; its scheduling priority the platform's."""
    if kind not in SALTED:
        return telemetry.with_trace_context(span, body), StreamWants(usage=True)
    body = {**body, "cache_salt": tenant_cache_salt(tenant, body.get("cache_salt")),
            "priority": priority}
    if body.get("stream") is not True or kind not in STREAM_OPTIONS:
        return telemetry.with_trace_context(span, body), StreamWants(usage=True)
    options = body.get("stream_options") or {}  # an object, or absent (check_shape)
    wants = stream_wants(options, body.get("n"), body.get("return_token_ids"))
    body = {**body, "stream_options": {**options, "include_usage": True,
                                       "continuous_usage_stats": True}}
    return telemetry.with_trace_context(span, body), wants


async def call_engine(access: Access, chosen: Route, admitted: Admitted, body: dict[str, Any],
                      exchange: Exchange) -> tuple[EngineCall, dict[str, Any]]:
    """Send the request to the endpoint's engines and wait for the head of the reply."""
    call = chosen.target.call(exchange.kind, body, exchange.request_id)
    try:
        return call, await call.head()
    except asyncio.CancelledError:
        call.cancel()
        await asyncio.shield(access.finish(admitted, Outcome.CLIENT_CANCELLED))
        raise
    except EndpointUnavailable as exc:
        call.cancel()
        await resend_if_asked(access, admitted, exchange, exc.retry_after_s)
        await access.finish(admitted, Outcome.ERROR, http_status=503,
                            error_class=ErrorClass.PLATFORM_ERROR)
        raise Refusal(error_response(503, str(exc), code="endpoint_unavailable",
                                     headers={"retry-after": str(exc.retry_after_s)})) from None
    except EndpointOverloaded as exc:
        # The endpoint's bounded queue filled while this request waited for its turn.
        call.cancel()
        await resend_if_asked(access, admitted, exchange, exc.retry_after_s)
        raise await overloaded(access, admitted, chosen.model, str(exc)) from None
    except Exception as exc:
        call.cancel()
        logger.warning("endpoint %s failed: %r", chosen.model, exc)
        await resend_if_asked(access, admitted, exchange, FAULT_RETRY_S)
        await access.finish(admitted, Outcome.ERROR, http_status=503,
                            error_class=ErrorClass.PLATFORM_ERROR)
        raise Refusal(error_response(
            503, f"endpoint `{chosen.model}` is unavailable: {type(exc).__name__}")) from None


async def resend_if_asked(access: Access, admitted: Admitted, exchange: Exchange,
                          retry_after_s: float) -> None:
    """For a request its sender sends again (a batch line), the engines' failure is no
    answer: its admission is undone, nothing recorded, and Unserved raised."""
    if exchange.resend_on_fault:
        await access.withdraw(admitted)
        raise Unserved(retry_after_s)


async def respond(access: Access, chosen: Route, admitted: Admitted, call: EngineCall,
                  head: dict[str, Any], wants: StreamWants,
                  exchange: Exchange) -> Response:
    """The engine's JSON reply (settled now), or its stream, relayed and settled at its end."""
    if head["status"] != HTTPStatus.OK:
        status, err = from_engine_error(head.get("body") or {})
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            await resend_if_asked(access, admitted, exchange, FAULT_RETRY_S)
        await access.finish(admitted, Outcome.ERROR, http_status=status,
                            error_class=ErrorClass.CLIENT_ERROR if status < 500
                            else ErrorClass.ENGINE_ERROR)
        return JSONResponse(err, status, headers=exchange.headers)
    if exchange.conversation is not None:
        return await responses.answer(access, admitted, call, head, chosen.target.bound,
                                      exchange.conversation, exchange.headers)
    if not head.get("stream"):
        result = head["body"]
        await settle_reply(access, admitted, result)
        if exchange.kind in OPENAI_KINDS:
            result = shaped(result)
        return JSONResponse(result, headers=exchange.headers)
    return StreamingResponse(
        relay(call, head.get("first"), access, admitted, wants, chosen.target.bound),
        media_type="text/event-stream", headers=exchange.headers)


async def overloaded(access: Access, admitted: Admitted, model: str, why: str) -> Refusal:
    """503 at once for an endpoint too loaded to serve the request in time: no engine saw
    it, its usage record counts no tokens."""
    await access.finish(admitted, Outcome.ERROR, 0, 0, http_status=503,
                        error_class=ErrorClass.OVERLOADED)
    return Refusal(error_response(503, f"endpoint `{model}` is overloaded: {why}; retry shortly",
                                  code="endpoint_overloaded",
                                  headers=spread_retry(1, random.random())))
