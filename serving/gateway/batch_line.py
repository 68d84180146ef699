"""One batch line through the gateway's own steps, as the batch's tenant, without HTTP:
route (a model it may call), admit (its quotas and monthly budget apply), call the engine,
answer and settle exactly one ledger record under the line's request id. The answer is what
an HTTP client would have got: its status and JSON body (an OpenAI error for a refusal).

Some refusals are waited out instead of answered, with nothing recorded for the line: its
tenant's rate and concurrency limits (a batch is in no hurry; the line goes back until they
let it through), the store being away (503), and its engines failing it (none reachable, a
replica killed mid-answer: sent again, a few times, under the same request id). A refusal
that waiting cannot help (the monthly budget spent, a line larger than a limit) is the
line's answer, as OpenAI's `insufficient_quota` lines are."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from fastapi.responses import Response

from serving.batch.batch_store import ClaimedLine
from serving.batch.capacity import BUSY_FOR_S, EndpointLoad, batch_room
from serving.batch.worker import LineResult
from serving.gateway import telemetry
from serving.gateway.access import Admitted
from serving.gateway.engine_steps import BATCH_PRIORITY, call_engine, engine_body, respond
from serving.gateway.errors import error_response
from serving.gateway.exchange import Exchange, Refusal, Route, Unserved
from serving.gateway.pipeline import (
    Gateway,
    ask_quotas,
    check_shape,
    continue_conversation,
    refused,
    route,
)
from serving.tenancy import KeyScope, Principal, TenantStatus
from serving.tenancy.admission import Limit
from serving.tenancy.records import batch_line_request_id

STORE_AWAY_RETRY_S = 1.0  # a line refused for the store being away is sent again after this
# A concurrency slot frees at no time the limits know: a line refused for one tries again
# after this. (Requests and tokens per minute say when their window resets.)
SLOT_RETRY_S = 0.5
# A line its engines fail is sent again this often (by this replica), waiting twice as long
# each time up to a cap (1, 2, 4, ... 30 s: a minute and more, what a CPU engine replica
# takes to be restarted), before the failure is its answer.
ENGINE_FAULT_RESENDS = 6
ENGINE_FAULT_WAIT_CAP_S = 30.0
MAX_TRACKED_FAULTS = 100_000
# Limits that waiting cures; the monthly budget and a line larger than a limit it never is.
WAITABLE = frozenset({Limit.CONCURRENCY, Limit.REQUESTS, Limit.TOKENS})


@dataclass(frozen=True)
class LineAnswer:
    status: int
    body: dict[str, Any]
    request_id: str

    @property
    def ok(self) -> bool:
        return self.status == 200


class LineDeferred(Exception):
    """The line was refused in a way waiting will cure; nothing was recorded for it."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(retry_after_s)
        self.retry_after_s = retry_after_s


class EngineFault(LineDeferred):
    """The engines failed the line (none reachable, a replica died); nothing was recorded."""


async def admit_line(gateway: Gateway, principal: Principal, chosen: Route,
                     body: dict[str, Any], exchange: Exchange) -> Admitted:
    """`admit` for a line: a refusal that waiting cures defers it, unrecorded (a batch is
    in no hurry, and its tenant's concurrency limit must not fail the lines past it)."""
    admitted = await ask_quotas(gateway.access, principal, chosen, body, exchange)
    decision = admitted.decision
    if decision.admitted:
        return admitted
    if set(decision.refused) <= WAITABLE:
        raise LineDeferred(decision.retry_after_s or SLOT_RETRY_S)
    raise await refused(gateway.access, admitted)


async def answer_line(gateway: Gateway, principal: Principal, kind: str, body: dict[str, Any],
                      request_id: str, custom_id: str, resend_on_fault: bool = True
                      ) -> LineAnswer:
    """`kind` is the gateway's (chat, completion, embedding, responses); the line's
    `custom_id` is kept in its ledger record as the client's id of the request. Raises
    LineDeferred for a refusal that waiting cures, and (with `resend_on_fault`) for the
    engines failing it."""
    exchange = Exchange(kind, request_id, telemetry.start_request_span({}, kind))
    exchange.client_request_id = custom_id[:128]
    exchange.resend_on_fault = resend_on_fault
    try:
        try:
            response = await _through_steps(gateway, principal, kind, body, exchange)
        except Unserved as unserved:
            raise EngineFault(unserved.retry_after_s) from None
    except BaseException as exc:
        telemetry.end_span(exchange.span, error=type(exc).__name__)
        raise
    telemetry.end_span(exchange.span, response.status_code)
    return LineAnswer(response.status_code, json.loads(response.body), request_id)


async def _through_steps(gateway: Gateway, principal: Principal, kind: str,
                         body: dict[str, Any], exchange: Exchange) -> Response:
    access = gateway.access
    try:
        check_shape(body, gateway.limits)
        chosen = await route(gateway.endpoints, access, principal, body)
        if kind == "responses":
            body = await continue_conversation(access, principal, body, exchange,
                                               gateway.limits)
        telemetry.describe_request(exchange.span, kind, chosen.model, body, principal.tenant)
        admitted = await admit_line(gateway, principal, chosen, body, exchange)
    except Refusal as refusal:
        if refusal.response.status_code == 503:  # the store away, before any record
            raise LineDeferred(STORE_AWAY_RETRY_S) from None
        return refusal.response
    try:
        body, wants = engine_body(chosen.engine_body({**body, "stream": False}), exchange.span,
                                  principal.tenant, kind, priority=BATCH_PRIORITY)
        call, head = await call_engine(access, chosen, admitted, body, exchange)
    except Refusal as refusal:
        return refusal.response
    return await respond(access, chosen, admitted, call, head, wants, exchange)


class GatewayLines:
    """The batch worker's hands in one gateway replica: `room(model)` reads the endpoint's
    in-flight bound as this replica sees it, `run(line)` sends a line through the gateway's
    steps as its tenant (a suspended tenant's lines fail as its requests would)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.batch_in_flight: dict[str, int] = {}
        self.interactive_seen: dict[str, float] = {}  # model -> when last seen in flight
        # Engine failures per line, so a line that keeps failing its engine (one that crashes
        # it, say) is answered with the failure after a few resends rather than sent for ever.
        self.engine_faults: dict[str, int] = {}

    def room(self, model: str) -> int:
        target = self.gateway.endpoints.get(model)
        if target is None:
            return 1  # the line is answered 404 by the route step, as a request would be
        if getattr(target, "at_zero", False):
            return 0  # woken by the controller when it lends the backlog a replica, not here
        bound = target.bound
        lines = self.batch_in_flight.get(model, 0)
        now = time.monotonic()
        if bound.in_flight > lines:  # interactive requests in flight now (asked every tick)
            self.interactive_seen[model] = now
        recently = now - self.interactive_seen.get(model, -BUSY_FOR_S) < BUSY_FOR_S
        # The slots of the replicas up: lines beyond them would queue in those engines and
        # count in the gateway's standing-queue test, refusing interactive requests.
        return batch_room(EndpointLoad(slots=bound.running_slots(), in_flight=bound.in_flight,
                                       waiting=len(bound.waiting), batch_in_flight=lines,
                                       interactive_recently=recently))

    async def run(self, line: ClaimedLine) -> LineResult:
        request_id = batch_line_request_id(line.batch_id, line.line)
        tenant = await asyncio.to_thread(self.gateway.access.store.get_tenant, line.tenant)
        if tenant.status != TenantStatus.ACTIVE:
            suspended = error_response(403, f"tenant {tenant.name!r} is suspended",
                                       code="account_deactivated")
            return LineResult(403, json.loads(suspended.body), request_id)
        principal = Principal(tenant.name, tenant.priority, line.key_prefix, KeyScope.INFERENCE,
                              tenant.slo)
        model = str(line.body.get("model"))
        self.batch_in_flight[model] = self.batch_in_flight.get(model, 0) + 1
        faults = self.engine_faults.get(request_id, 0)
        try:
            answer = await answer_line(self.gateway, principal, line.kind, line.body,
                                       request_id, line.custom_id,
                                       resend_on_fault=faults < ENGINE_FAULT_RESENDS)
        except EngineFault as fault:
            if len(self.engine_faults) >= MAX_TRACKED_FAULTS:
                self.engine_faults.clear()  # lines another replica took over: forget them
            self.engine_faults[request_id] = faults + 1
            backoff = min(2.0 ** faults, ENGINE_FAULT_WAIT_CAP_S)
            return LineResult.deferred(request_id, max(fault.retry_after_s, backoff))
        except LineDeferred as deferred:
            return LineResult.deferred(request_id, deferred.retry_after_s)
        finally:
            self.batch_in_flight[model] -= 1
        self.engine_faults.pop(request_id, None)
        return LineResult(answer.status, answer.body, answer.request_id)
