"""The gateway's token path, one request at a time, as named steps:

    authenticate -> read body -> check its shape -> route -> [continue the conversation]
      -> refuse if full -> admit -> call the engine -> respond (JSON, or relay the SSE
      stream) -> settle and record

The steps up to admission are here; the engine's (engine_steps) and the Responses API's
own (responses) beside it; what a request carries between them is in exchange.

Authentication comes before the body is read, so an anonymous client cannot make the gateway
read 8 MiB. Each step returns what the next one needs, or raises Refusal with the response
to send instead; a refusal after admission settles the request's usage record first, so
every request that reached admission ends in exactly one record."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from serving.engine.adapters import AdapterRef
from serving.gateway import responses, telemetry
from serving.gateway.access import Access, Admitted, NotGranted
from serving.gateway.claim import Claims
from serving.gateway.engine_steps import call_engine, engine_body, overloaded, respond
from serving.gateway.errors import error_response
from serving.gateway.exchange import Exchange, Refusal, Route, store_unavailable
from serving.gateway.shape import RequestLimits, bad_shape
from serving.targets import EndpointTarget
from serving.tenancy import (
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
# What each kind claims from the token quotas (see claim.Claims).
CLAIMS = {"chat": Claims.GENERATION, "completion": Claims.GENERATION,
          "responses": Claims.GENERATION, "embedding": Claims.PROMPT,
          "pooling": Claims.PROMPT, "score": Claims.PROMPT, "rerank": Claims.PROMPT,
          "tokenize": Claims.NOTHING, "detokenize": Claims.NOTHING}


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


async def for_caller(access: Access, request: Request, act: Callable[[Principal], Awaitable[Any]],
                     passes: tuple[type[BaseException], ...] = (Refusal,)) -> Any:
    """`act(the caller)` after authentication: the step of every route that reads or changes
    the caller's own things. What `act` raises of `passes` goes on as raised; anything else
    is the store (or Redis) away, whatever its driver raised: a 503 Refusal."""
    principal = await authenticate(access, request)
    try:
        return await act(principal)
    except passes:
        raise
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
    try:
        # Not an endpoint's name: one of the tenant's own adapters', or nothing (another
        # tenant's adapter is as missing as a name never registered). Asked for every name
        # (names are never both), so that another tenant's endpoint and a missing name
        # take the same reads.
        adapter = await access.adapter(principal, model)
        if model in endpoints:
            adapter = None
        endpoint = adapter.endpoint if adapter is not None else model
        target = endpoints.get(endpoint)
        # Asked for a missing endpoint too: the answer takes the same path, and the same time,
        # whether the endpoint is another tenant's or does not exist.
        allowed = await access.may_use(principal, endpoint) and target is not None
        card = await target.card() if allowed else None
    except Exception as exc:
        raise store_unavailable(exc) from None
    if not allowed:
        raise model_not_found(model)
    return Route(endpoint, target, card,
                 None if adapter is None else AdapterRef(adapter.name, adapter.path,
                                                         adapter.digest))


async def continue_conversation(access: Access, principal: Principal, body: dict[str, Any],
                                exchange: Exchange, limits: RequestLimits) -> dict[str, Any]:
    """A Responses API request: the conversation it continues, from the store (see
    responses.py); the body the engine gets."""
    try:
        body, exchange.conversation = await responses.continue_conversation(
            access, principal, body, limits.response_retention_s)
    except responses.ConversationRefused as refused:
        raise Refusal(refused.response) from None
    except Exception as exc:
        raise store_unavailable(exc) from None
    return body


def model_not_found(model: str) -> Refusal:
    # The name as given when it is a possible name; otherwise escaped and cut short, so an
    # unencodable or huge name can neither break the answer nor flood it.
    shown = model if ENDPOINT_NAME.fullmatch(model) else ascii(model)[1:-1][:64]
    return Refusal(error_response(
        404, f"The model `{shown}` does not exist or you do not have access to it.",
        param="model", code="model_not_found"))


def adapter_of(chosen: Route) -> str | None:
    """The name of the LoRA adapter a routed request runs with, for its ledger record; None
    for the endpoint's own model."""
    return chosen.adapter.name if chosen.adapter else None


async def refuse_if_full(access: Access, principal: Principal, chosen: Route,
                         exchange: Exchange) -> None:
    """An endpoint too full to serve the request within its tenant's TTFT and ITL targets
    refuses it before the tenant's counters are touched: a flood's excess costs no round
    trips."""
    why = chosen.target.bound.why_refused(time.monotonic(), principal.slo.ttft_p95_s,
                                          principal.slo.itl_p95_s)
    if why is not None:
        unadmitted = access.unadmitted(principal, chosen.model, exchange.request_id,
                                       model=chosen.model_label, span=exchange.span,
                                       client_request_id=exchange.client_request_id,
                                       adapter=adapter_of(chosen))
        raise await overloaded(access, unadmitted, chosen.model, why)


async def ask_quotas(access: Access, principal: Principal, chosen: Route,
                     body: dict[str, Any], exchange: Exchange) -> Admitted:
    """The tenant's quotas asked for the request: its reservation if they admit it, their
    refusal if not (nothing recorded yet either way)."""
    try:
        return await access.admit(principal, chosen.model, exchange.request_id, body,
                                  chosen.card.get("max_model_len", 0),
                                  model=chosen.model_label, span=exchange.span,
                                  client_request_id=exchange.client_request_id,
                                  claims=CLAIMS[exchange.kind], adapter=adapter_of(chosen))
    except NotGranted:
        raise model_not_found(chosen.model) from None
    except Exception as exc:
        raise store_unavailable(exc) from None


async def refused(access: Access, admitted: Admitted) -> Refusal:
    """The 429 of a request its quotas refused, recorded as rejected."""
    await access.finish(admitted, Outcome.REJECTED)
    decision = admitted.decision
    return Refusal(error_response(429, decision.reason, code=decision.error_code))


async def admit(access: Access, principal: Principal, chosen: Route, body: dict[str, Any],
                exchange: Exchange) -> Admitted:
    """The tenant's quotas; 429 when they refuse. Either way the response says what is
    left (x-ratelimit-*) and what this cost the gateway (Server-Timing)."""
    admitted = await ask_quotas(access, principal, chosen, body, exchange)
    exchange.headers.update(admitted.decision.headers())
    # What authentication, access and admission cost this request (W3C Server-Timing).
    exchange.headers["server-timing"] = (
        f"admission;dur={(time.perf_counter() - exchange.arrived) * 1000:.3f}")
    if not admitted.decision.admitted:
        raise await refused(access, admitted)
    return admitted


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
            if exchange.kind == "responses":
                body = await continue_conversation(access, principal, body, exchange,
                                                   self.limits)
            telemetry.describe_request(span, exchange.kind, chosen.model, body, principal.tenant)
            await refuse_if_full(access, principal, chosen, exchange)
            with telemetry.step(span, "admission"):
                admitted = await admit(access, principal, chosen, body, exchange)
            body, wants = engine_body(chosen.engine_body(body), span, principal.tenant,
                                      exchange.kind)
            call, head = await call_engine(access, chosen, admitted, body, exchange)
        except Refusal as refusal:
            refusal.response.headers.update(exchange.headers)
            return refusal.response
        return await respond(access, chosen, admitted, call, head, wants, exchange)
