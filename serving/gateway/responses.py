"""The Responses API's own steps around the shared pipeline: a conversation continued from a
stored response (`previous_response_id`), the reply kept for its tenant (`store`, OpenAI's
default), and a stream relayed in the Responses event format (`event: response.*`), settled
with the usage of its closing event.

The engine never keeps state: it gets the whole conversation as input and `store: false`;
the platform's store keeps each response with the conversation before it, so any gateway
replica continues it, after any restart, and only for the tenant that made it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from serving.gateway.access import Access, Admitted
from serving.gateway.errors import error_response, sse_error_event
from serving.gateway.relay import content_seen, engine_events, settle_stream
from serving.targets import EngineCall, InFlightBound
from serving.tenancy import Outcome, Principal
from serving.tenancy import stored_responses as stored

logger = logging.getLogger(__name__)

# The events that close a response's stream, each carrying the whole response.
CLOSING_EVENTS = ("response.completed", "response.incomplete", "response.failed")
# The events that carry the response object (rewritten as its client sees it).
RESPONSE_EVENTS = ("response.created", "response.in_progress", *CLOSING_EVENTS)
# The per-token events, relayed as they come.
TEXT_DELTAS = ("response.output_text.delta",)
# vLLM's own fields of a response object, never OpenAI's.
ENGINE_FIELDS = ("kv_transfer_params", "ec_transfer_params", "input_messages",
                 "output_messages")


class ConversationRefused(Exception):
    def __init__(self, response) -> None:
        self.response = response


@dataclass(frozen=True)
class Conversation:
    """What the engine is given as input (the conversation so far, then the new input),
    the response it continues, and whether the reply is kept."""

    input: list[Any]
    previous_response_id: str | None
    keep: bool
    retention_s: float = stored.DEFAULT_RETENTION.total_seconds()


def as_items(value: Any) -> list[Any] | None:
    """A request's `input` as input items (a string is one user message); None when it is
    neither a string nor a list (vLLM's validation says what is wrong with it)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return list(value) if isinstance(value, list) else None


def continued(body: dict[str, Any], before: stored.StoredResponse | None,
              retention_s: float = stored.DEFAULT_RETENTION.total_seconds()
              ) -> tuple[dict[str, Any], Conversation]:
    """The engine's body for a request continuing `before` (or starting afresh), and its
    conversation. Pure."""
    given = as_items(body.get("input"))
    history = before.conversation() if before is not None else []
    conversation = Conversation(
        input=[*history, *(given or [])],
        previous_response_id=before.id if before is not None else None,
        keep=body.get("store", True) is not False, retention_s=retention_s)
    engine = {k: v for k, v in body.items() if k != "previous_response_id"}
    engine["store"] = False
    if before is not None or given is not None:
        engine["input"] = conversation.input
    return engine, conversation


async def continue_conversation(access: Access, principal: Principal, body: dict[str, Any],
                                retention_s: float) -> tuple[dict[str, Any], Conversation]:
    """The stored response `previous_response_id` names, read for the caller's tenant only:
    another tenant's, an expired or a deleted one answers as one that never existed."""
    if body.get("store") is not None and not isinstance(body["store"], bool):
        raise ConversationRefused(error_response(400, "store must be a boolean", param="store"))
    previous = body.get("previous_response_id")
    if previous is None:
        return continued(body, None, retention_s)
    if not isinstance(previous, str):
        raise ConversationRefused(error_response(
            400, "previous_response_id must be a string", param="previous_response_id"))
    if body.get("input") is not None and as_items(body["input"]) is None:
        raise ConversationRefused(error_response(
            400, "input must be a string or a list of input items", param="input"))
    before = await asyncio.to_thread(stored.find, access.store, principal.tenant, previous)
    if before is None:
        raise ConversationRefused(not_found(previous, "previous_response_id"))
    return continued(body, before, retention_s)


def not_found(response_id: str, param: str | None = None):
    shown = (response_id if stored.is_response_id(response_id)
             else ascii(response_id)[1:-1][:64])
    return error_response(404, f"Response with id '{shown}' not found.", param=param,
                          code="response_not_found" if param is None else
                          "previous_response_not_found")


def conforming(value: Any) -> Any:
    """`value` (a response or an event, or a part of one) as OpenAI's schema has it: an
    `output_text` part's `logprobs` is a list, never null (vLLM writes null when none were
    asked for)."""
    if isinstance(value, list):
        return [conforming(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {key: conforming(item) for key, item in value.items()}
    if out.get("type") == "output_text" and out.get("logprobs", []) is None:
        out["logprobs"] = []
    return out


def answered(response: dict[str, Any], conversation: Conversation) -> dict[str, Any]:
    """The response as its client sees it: as OpenAI's schema has it (`error` and `text`
    present, no null `user` or `usage`), without vLLM's own fields, continuing what it
    continues."""
    out = {k: v for k, v in conforming(response).items()
           if k not in ENGINE_FIELDS and not (k in ("user", "usage") and v is None)}
    out.setdefault("error", None)
    if out.get("text") is None:
        out["text"] = {"format": {"type": "text"}}
    out["previous_response_id"] = conversation.previous_response_id
    out["store"] = conversation.keep
    return out


async def keep(access: Access, principal: Principal, endpoint: str, response: dict[str, Any],
               conversation: Conversation) -> None:
    """Store the response for its tenant when asked to. A store that fails costs the client
    nothing but the continuation (said in the log); the answer is already the engine's."""
    if not conversation.keep or response.get("status") == "failed":
        return
    try:
        await asyncio.to_thread(stored.save, access.store, answered(response, conversation),
                                tenant=principal.tenant, endpoint=endpoint,
                                conversation=conversation.input,
                                retention=timedelta(seconds=conversation.retention_s))
    except Exception as exc:
        logger.warning("storing response %s failed: %r", response.get("id"), exc)


def usage_of(response: dict[str, Any]) -> dict[str, int] | None:
    """A response's usage in the ledger's terms (prompt and completion tokens)."""
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return None
    return {"prompt_tokens": int(usage.get("input_tokens", 0)),
            "completion_tokens": int(usage.get("output_tokens", 0))}


def event_of(event: str) -> tuple[str, dict[str, Any] | None]:
    """(`event:` type, parsed `data:` body) of one SSE event; the body is not parsed for a
    text delta (one per token, already as OpenAI's schema has it)."""
    head, _, rest = event.partition("\n")
    kind = head[len("event: "):] if head.startswith("event: ") else ""
    if kind in TEXT_DELTAS:
        return kind, None
    try:
        body = json.loads(rest[len("data: "):])
    except ValueError:
        return kind, None
    return kind, body if isinstance(body, dict) else None


def response_event(kind: str, body: dict[str, Any], conversation: Conversation) -> str:
    """An event as its client sees it: its response answered, its parts conforming."""
    if isinstance(body.get("response"), dict):
        body = {**body, "response": answered(body["response"], conversation)}
    else:
        body = conforming(body)
    return (f"event: {kind}\ndata: "
            f"{json.dumps(body, separators=(',', ':'), ensure_ascii=False)}\n\n")


async def relay_events(call: EngineCall, first: str | None, access: Access,
                       admitted: Admitted, bound: InFlightBound,
                       finished: Callable[[dict[str, Any]], Awaitable[None]],
                       conversation: Conversation) -> AsyncIterator[str]:
    """Forward a response's events as the engine makes them. The closing event's response
    gives the usage (settled before that event goes out) and is handed to `finished` (to be
    stored). A client that leaves cancels the engine request; it is billed one token per
    text delta relayed (the Responses stream carries no running counts)."""
    deltas = 0
    outcome, usage = Outcome.OK, None
    try:
        async for event in engine_events(call, first, admitted):
            kind, carried = event_of(event)
            if kind == "response.output_text.delta":
                deltas += 1
                content_seen(admitted, bound, deltas)
            elif kind == "error" or event.startswith('data: {"error"'):
                outcome = Outcome.ERROR
            elif carried is not None and kind not in CLOSING_EVENTS:
                event = response_event(kind, carried, conversation)
            elif carried is not None and isinstance(carried.get("response"), dict):
                usage = usage_of(carried["response"])
                if kind == "response.failed":
                    outcome = Outcome.ERROR
                await settle_stream(access, admitted, outcome, usage)
                await finished(carried["response"])
                yield response_event(kind, carried, conversation)
                continue
            yield event
        if usage is None:  # the engine's stream ended without its closing event
            await settle_stream(access, admitted, Outcome.ERROR, None)
    except asyncio.CancelledError:
        call.cancel()
        asyncio.get_running_loop().create_task(settle_stream(
            access, admitted, Outcome.CLIENT_CANCELLED, None))
        raise
    except Exception as exc:
        logger.warning("response stream broke: %r", exc)
        call.cancel()
        await settle_stream(access, admitted, Outcome.ERROR, None)
        yield sse_error_event(HTTPStatus.SERVICE_UNAVAILABLE,
                              f"the engine failed mid-stream: {exc}")
    finally:
        call.cancel()


async def answer(access: Access, admitted: Admitted, call: EngineCall, head: dict[str, Any],
                 bound: InFlightBound, conversation: Conversation,
                 headers: dict[str, str]) -> Response:
    """The engine's response, settled with its usage and kept for its tenant; or its
    stream, relayed (the closing event's response kept)."""
    async def finished(response: dict[str, Any]) -> None:
        await keep(access, admitted.principal, admitted.endpoint, response, conversation)

    if head.get("stream"):
        return StreamingResponse(
            relay_events(call, head.get("first"), access, admitted, bound, finished,
                         conversation), media_type="text/event-stream", headers=headers)
    response = head["body"]
    usage = usage_of(response) or {}
    await access.finish(admitted, Outcome.OK, usage.get("prompt_tokens"),
                        usage.get("completion_tokens", 0))
    await finished(response)
    return JSONResponse(answered(response, conversation), headers=headers)
