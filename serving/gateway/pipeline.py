"""The gateway's token path, one request at a time, as named steps:

    authenticate -> read body -> check its shape -> route -> refuse if full -> admit
      -> call the engine -> respond (JSON, or relay the SSE stream) -> settle and record

Authentication comes before the body is read, so an anonymous client cannot make the gateway
read 8 MiB. Each step returns what the next one needs, or raises Refusal with the response
to send instead; a refusal after admission settles the request's usage record first, so
every request that reached admission ends in exactly one record."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from observability.metrics import model_label
from serving.gateway import telemetry
from serving.gateway.access import Access, Admitted, NotGranted
from serving.gateway.errors import error_response, from_engine_error
from serving.gateway.openai_shape import shaped
from serving.gateway.relay import relay, settle_reply
from serving.gateway.shape import RequestLimits, bad_shape
from serving.gateway.stream_usage import StreamWants, stream_wants
from serving.targets import (
    EndpointOverloaded,
    EndpointTarget,
    EndpointUnavailable,
    EngineCall,
)
from serving.targets.bound import spread_retry
from serving.tenancy import (
    ErrorClass,
    Forbidden,
    Outcome,
    Principal,
    TenancyError,
    Unauthenticated,
)
from serving.tenancy.validation import CLIENT_REQUEST_ID_PATTERN, NAME_PATTERN

logger = logging.getLogger(__name__)

# Bodies above this are refused before parsing (prompts of a 128k-token context fit easily).
MAX_BODY_BYTES = 8 * 1024 * 1024
REQUEST_ID_HEADER = "x-request-id"
# The client's own id of its request (OpenAI's header): kept in the ledger beside the
# platform's id and echoed, never the ledger's key.
CLIENT_REQUEST_ID_HEADER = "x-client-request-id"
CLIENT_REQUEST_ID = re.compile(CLIENT_REQUEST_ID_PATTERN)
ENDPOINT_NAME = re.compile(NAME_PATTERN)
REPLICA_HEADER = "x-aifactory-replica"
# Kinds of request that run the model: they claim tokens and salt the prefix cache. The
# others (tokenize, detokenize) count as requests only.
GENERATING = frozenset({"chat", "completion"})


class Refusal(Exception):
    """A request refused before it reached an engine, as the response to send."""

    def __init__(self, response: Response) -> None:
        self.response = response


@dataclass
class Exchange:
    """One request on its way through the steps, and the headers its response will carry
    whatever it turns out to be."""

    kind: str
    request_id: str
    span: Any
    arrived: float = field(default_factory=time.perf_counter)
    headers: dict[str, str] = field(default_factory=dict)
    client_request_id: str | None = None


@dataclass(frozen=True)
class Route:
    """The endpoint a request names, which its tenant may call."""

    model: str
    target: EndpointTarget
    card: dict[str, Any]

    @property
    def model_label(self) -> str:
        return model_label(self.card.get("root"))


def store_unavailable(exc: Exception) -> Refusal:
    logger.warning("tenancy store or counters unavailable: %r", exc)
    return Refusal(error_response(
        503, "the platform's tenancy store is unavailable; retry shortly",
        headers={"retry-after": "1"}))


# -- the steps -------------------------------------------------------------------------------


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
        raise store_unavailable(exc) from None


def take_client_request_id(request: Request, exchange: Exchange) -> None:
    """The client's id of its request (`x-client-request-id`), if it gave one: once, visible
    ASCII, at most 128 characters. An id that is not is refused, not trimmed: an altered id
    would no longer match what the client logged, which is all it is for. A client's
    `x-request-id` is not read: proxies on the way set it too (Serve, HAProxy)."""
    given = request.headers.getlist(CLIENT_REQUEST_ID_HEADER)
    if not given:
        return
    if len(given) > 1 or not CLIENT_REQUEST_ID.fullmatch(given[0]):
        raise Refusal(error_response(
            400, f"{CLIENT_REQUEST_ID_HEADER} must be given once: a letter or digit, then up "
                 "to 127 visible ASCII characters", param=CLIENT_REQUEST_ID_HEADER))
    exchange.client_request_id = given[0]
    exchange.headers[CLIENT_REQUEST_ID_HEADER] = given[0]


async def read_body(request: Request) -> dict[str, Any]:
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


def check_shape(body: dict[str, Any], limits: RequestLimits) -> None:
    """What the gateway itself reads of the body (its claim on the quotas, whether it
    streams) must make sense before admission counts it."""
    bad = bad_shape(body, limits)
    if bad is not None:
        raise Refusal(error_response(400, bad.message, param=bad.param))


async def route(endpoints: Mapping[str, EndpointTarget], access: Access, principal: Principal,
                body: dict[str, Any]) -> Route:
    """The endpoint `model` names, if the tenant may call it. Another tenant's endpoint
    answers exactly as a missing one does."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Refusal(error_response(
            400, "you must provide a model parameter (a string)", param="model"))
    if not ENDPOINT_NAME.fullmatch(model):
        # No endpoint can have such a name: the store is not asked (a lone surrogate or a NUL
        # is not even a value it can take), and the answer is the one for any missing name.
        raise model_not_found(model)
    target = endpoints.get(model)
    try:
        # Asked for a missing endpoint too: the answer takes the same path, and the same time,
        # whether the endpoint is another tenant's or does not exist.
        allowed = await access.may_use(principal, model) and target is not None
        card = await target.card() if allowed else None
    except Exception as exc:
        raise store_unavailable(exc) from None
    if not allowed:
        raise model_not_found(model)
    return Route(model, target, card)


def model_not_found(model: str) -> Refusal:
    # The name as given when it is a possible name; otherwise escaped and cut short, so an
    # unencodable or huge name can neither break the answer nor flood it.
    shown = model if ENDPOINT_NAME.fullmatch(model) else ascii(model)[1:-1][:64]
    return Refusal(error_response(
        404, f"The model `{shown}` does not exist or you do not have access to it.",
        param="model", code="model_not_found"))


async def refuse_if_full(access: Access, principal: Principal, chosen: Route,
                         exchange: Exchange) -> None:
    """An endpoint too full to serve the request within its tenant's TTFT target refuses it
    before the tenant's counters are touched: a flood's excess costs no round trips."""
    why = chosen.target.bound.why_refused(time.monotonic(), principal.slo.ttft_s)
    if why is not None:
        unadmitted = access.unadmitted(principal, chosen.model, exchange.request_id,
                                       model=chosen.model_label, span=exchange.span,
                                       client_request_id=exchange.client_request_id)
        raise await overloaded(access, unadmitted, chosen.model, why)


async def admit(access: Access, principal: Principal, chosen: Route, body: dict[str, Any],
                exchange: Exchange) -> Admitted:
    """The tenant's quotas; 429 when they refuse. Either way the response says what is
    left (x-ratelimit-*) and what this cost the gateway (Server-Timing)."""
    try:
        admitted = await access.admit(principal, chosen.model, exchange.request_id, body,
                                      chosen.card.get("max_model_len", 0),
                                      model=chosen.model_label, span=exchange.span,
                                      client_request_id=exchange.client_request_id,
                                      counts_tokens=exchange.kind in GENERATING)
    except NotGranted:
        raise model_not_found(chosen.model) from None
    except Exception as exc:
        raise store_unavailable(exc) from None
    exchange.headers.update(admitted.decision.headers())
    # What authentication, access and admission cost this request (W3C Server-Timing).
    exchange.headers["server-timing"] = (
        f"admission;dur={(time.perf_counter() - exchange.arrived) * 1000:.3f}")
    decision = admitted.decision
    if not decision.admitted:
        await access.finish(admitted, Outcome.REJECTED)
        raise Refusal(error_response(429, decision.reason, code=decision.error_code))
    return admitted


def tenant_cache_salt(tenant: str, given: str | None) -> str:
    """vLLM's `cache_salt` for a tenant's request: prefix-cache blocks are shared only between
    requests with the same salt, so one tenant never hits (and never times) another's cached
    prompts (the class of CVE-2025-46570). A client's own salt narrows it further within its
    tenant; it never replaces the tenant's part, so no salt a client picks is another's."""
    return hashlib.sha256(f"{tenant}\0{given or ''}".encode()).hexdigest()


def engine_body(body: dict[str, Any], span: Any, tenant: str,
                kind: str = "completion") -> tuple[dict[str, Any], StreamWants]:
    """The body the engine gets, and what the client asked of the stream's usage. The ledger
    needs the engine's exact counts, also of a stream cut short, so the engine is always
    asked for the final usage event and for running counts in every event. A generating
    request's prefix-cache salt is the tenant's."""
    if kind not in GENERATING:
        return telemetry.with_trace_context(span, body), StreamWants(usage=True)
    body = {**body, "cache_salt": tenant_cache_salt(tenant, body.get("cache_salt"))}
    if body.get("stream") is not True:
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
        await access.finish(admitted, Outcome.ERROR, http_status=503,
                            error_class=ErrorClass.PLATFORM_ERROR)
        raise Refusal(error_response(503, str(exc), code="endpoint_unavailable",
                                     headers={"retry-after": str(exc.retry_after_s)})) from None
    except EndpointOverloaded as exc:
        # The endpoint's bounded queue filled while this request waited for its turn.
        call.cancel()
        raise await overloaded(access, admitted, chosen.model, str(exc)) from None
    except Exception as exc:
        call.cancel()
        logger.warning("endpoint %s failed: %r", chosen.model, exc)
        await access.finish(admitted, Outcome.ERROR, http_status=503,
                            error_class=ErrorClass.PLATFORM_ERROR)
        raise Refusal(error_response(
            503, f"endpoint `{chosen.model}` is unavailable: {type(exc).__name__}")) from None


async def respond(access: Access, chosen: Route, admitted: Admitted, call: EngineCall,
                  head: dict[str, Any], wants: StreamWants,
                  exchange: Exchange) -> Response:
    """The engine's JSON reply (settled now), or its stream, relayed and settled at its end."""
    if head["status"] != HTTPStatus.OK:
        status, err = from_engine_error(head.get("body") or {})
        await access.finish(admitted, Outcome.ERROR, http_status=status,
                            error_class=ErrorClass.CLIENT_ERROR if status < 500
                            else ErrorClass.ENGINE_ERROR)
        return JSONResponse(err, status, headers=exchange.headers)
    if not head.get("stream"):
        result = head["body"]
        await settle_reply(access, admitted, result)
        if exchange.kind in GENERATING:
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


# -- the pipeline ----------------------------------------------------------------------------


class Gateway:
    """The steps, wired to one gateway replica's endpoints and tenancy."""

    def __init__(self, endpoints: Mapping[str, EndpointTarget], access: Access,
                 replica: str | None = None, limits: RequestLimits = RequestLimits()) -> None:
        """`replica` names this gateway replica in a response header, for operators
        tracing a request through several replicas."""
        self.endpoints = endpoints
        self.access = access
        self.replica = replica
        self.limits = limits

    def begin(self, request: Request, kind: str) -> Exchange:
        request_id = uuid.uuid4().hex  # the platform's own: the ledger's key, the engine's id
        exchange = Exchange(kind, request_id, telemetry.start_request_span(request.headers, kind))
        exchange.headers[REQUEST_ID_HEADER] = request_id
        if self.replica:
            exchange.headers[REPLICA_HEADER] = self.replica
        return exchange

    async def handle(self, request: Request, kind: str) -> Response:
        """One request under its span: a streamed response ends the span when the stream
        ends, any other response here."""
        exchange = self.begin(request, kind)
        try:
            response = await self.answer(request, exchange)
        except BaseException as exc:
            telemetry.end_span(exchange.span, error=type(exc).__name__)
            raise
        if not isinstance(response, StreamingResponse):
            telemetry.end_span(exchange.span, response.status_code)
        return response

    async def answer(self, request: Request, exchange: Exchange) -> Response:
        access, span = self.access, exchange.span
        try:
            with telemetry.step(span, "auth"):
                principal = await authenticate(access, request)
            take_client_request_id(request, exchange)
            body = await read_body(request)
            check_shape(body, self.limits)
            with telemetry.step(span, "routing"):
                chosen = await route(self.endpoints, access, principal, body)
            telemetry.describe_request(span, exchange.kind, chosen.model, body, principal.tenant)
            await refuse_if_full(access, principal, chosen, exchange)
            with telemetry.step(span, "admission"):
                admitted = await admit(access, principal, chosen, body, exchange)
            body, wants = engine_body(body, span, principal.tenant, exchange.kind)
            call, head = await call_engine(access, chosen, admitted, body, exchange)
        except Refusal as refusal:
            refusal.response.headers.update(exchange.headers)
            return refusal.response
        return await respond(access, chosen, admitted, call, head, wants, exchange)
