"""One batch line through the gateway's own steps, as the batch's tenant, without HTTP:
route (a model it may call), admit (its quotas and monthly budget apply), call the engine,
answer and settle exactly one ledger record under the line's request id. The answer is what
an HTTP client would have got: its status and JSON body (an OpenAI error for a refusal)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from serving.batch.batch_store import ClaimedLine
from serving.batch.capacity import EndpointLoad, batch_room
from serving.batch.worker import LineResult
from serving.gateway import telemetry
from serving.gateway.engine_steps import call_engine, engine_body, respond
from serving.gateway.errors import error_response
from serving.gateway.exchange import Exchange, Refusal
from serving.gateway.pipeline import (
    Gateway,
    admit,
    check_shape,
    continue_conversation,
    route,
)
from serving.tenancy import KeyScope, Principal, TenantStatus


@dataclass(frozen=True)
class LineAnswer:
    status: int
    body: dict[str, Any]
    request_id: str

    @property
    def ok(self) -> bool:
        return self.status == 200


def line_request_id(batch_id: str, line: int) -> str:
    """The ledger's key of a batch line: the same for every attempt at it, so a line run
    again after a crash is never recorded twice (the ledger skips a request id it has)."""
    return f"{batch_id}-{line}"


async def answer_line(gateway: Gateway, principal: Principal, kind: str, body: dict[str, Any],
                      request_id: str, custom_id: str) -> LineAnswer:
    """`kind` is the gateway's (chat, completion, embedding, responses); the line's
    `custom_id` is kept in its ledger record as the client's id of the request."""
    access = gateway.access
    exchange = Exchange(kind, request_id, telemetry.start_request_span({}, kind))
    exchange.client_request_id = custom_id[:128]
    try:
        try:
            check_shape(body, gateway.limits)
            chosen = await route(gateway.endpoints, access, principal, body)
            if kind == "responses":
                body = await continue_conversation(access, principal, body, exchange,
                                                   gateway.limits)
            telemetry.describe_request(exchange.span, kind, chosen.model, body,
                                       principal.tenant)
            admitted = await admit(access, principal, chosen, body, exchange)
            body, wants = engine_body({**body, "stream": False}, exchange.span,
                                      principal.tenant, kind)
            call, head = await call_engine(access, chosen, admitted, body, exchange)
        except Refusal as refusal:
            response = refusal.response
        else:
            response = await respond(access, chosen, admitted, call, head, wants, exchange)
    except BaseException as exc:
        telemetry.end_span(exchange.span, error=type(exc).__name__)
        raise
    telemetry.end_span(exchange.span, response.status_code)
    return LineAnswer(response.status_code, json.loads(response.body), request_id)


class GatewayLines:
    """The batch worker's hands in one gateway replica: `room(model)` reads the endpoint's
    in-flight bound as this replica sees it, `run(line)` sends a line through the gateway's
    steps as its tenant (a suspended tenant's lines fail as its requests would)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.batch_in_flight: dict[str, int] = {}

    def room(self, model: str) -> int:
        target = self.gateway.endpoints.get(model)
        if target is None:
            return 1  # the line is answered 404 by the route step, as a request would be
        bound = target.bound
        return batch_room(EndpointLoad(slots=bound.slots, in_flight=bound.in_flight,
                                       waiting=len(bound.waiting),
                                       batch_in_flight=self.batch_in_flight.get(model, 0)))

    async def run(self, line: ClaimedLine) -> LineResult:
        request_id = line_request_id(line.batch_id, line.line)
        tenant = await asyncio.to_thread(self.gateway.access.store.get_tenant, line.tenant)
        if tenant.status != TenantStatus.ACTIVE:
            refused = error_response(403, f"tenant {tenant.name!r} is suspended",
                                     code="account_deactivated")
            return LineResult(403, json.loads(refused.body), request_id)
        principal = Principal(tenant.name, tenant.priority, line.key_prefix, KeyScope.INFERENCE,
                              tenant.slo)
        model = str(line.body.get("model"))
        self.batch_in_flight[model] = self.batch_in_flight.get(model, 0) + 1
        try:
            answer = await answer_line(self.gateway, principal, line.kind, line.body,
                                       request_id, line.custom_id)
        finally:
            self.batch_in_flight[model] -= 1
        return LineResult(answer.status, answer.body, answer.request_id)
