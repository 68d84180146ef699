"""The last steps of the token path: relay a stream's SSE events to the client as the engine
makes them, and settle the request (its reservation and its one usage record) with the
engine's own token counts: its final usage event, or for a stream cut short the running
counts of its last relayed event (stream_usage)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

from serving.gateway import telemetry
from serving.gateway.access import Access, Admitted
from serving.gateway.errors import sse_error_event
from serving.gateway.openai_shape import shaped_event
from serving.gateway.stream_usage import RunningUsage, StreamWants
from serving.targets import EngineCall, InFlightBound
from serving.tenancy import ErrorClass, Outcome

logger = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"


def is_usage_event(event: str) -> bool:
    return '"choices":[]' in event and '"usage":{' in event


def event_body(event: str) -> dict:
    try:
        body = json.loads(event[len("data: "):])
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def settle_reply(access: Access, admitted: Admitted, result: dict[str, Any]) -> None:
    """A JSON reply: its usage is the engine's count."""
    telemetry.describe_response(admitted.span, result)
    usage = result.get("usage") or {}
    await access.finish(admitted, Outcome.OK, usage.get("prompt_tokens"),
                        usage.get("completion_tokens", 0))


async def engine_events(call: EngineCall, first: str | None,
                        admitted: Admitted) -> AsyncIterator[str]:
    """A stream's events: the first (read with its head), then the rest as the engine makes
    them. Each time the relay asks for the next (its client has taken the last) goes to
    `admitted.asked_at`."""
    if first is not None:
        yield first
        admitted.asked_at = time.monotonic()
    async for event in call.chunks():
        yield event
        admitted.asked_at = time.monotonic()


def content_seen(admitted: Admitted, bound: InFlightBound, count: int) -> None:
    """A content event went out (the `count`th): the first one's delay goes to the
    endpoint's `bound` (is its queue standing?), each later one's gap to its pace (are its
    tokens slow?), the last one's time to the ITL. The gap runs from the later of the last
    token and the relay's asking for this one: the engine's, not a slow reader's (a client
    that does not read would otherwise stretch the endpoint's pace and have other tenants'
    requests refused)."""
    now = time.monotonic()
    if admitted.first_token_at is None:
        admitted.first_token_at = now
        bound.delay.observe(now, now - admitted.started)
    else:
        bound.pace.observe(now, now - max(admitted.last_token_at, admitted.asked_at or 0.0))
    admitted.last_token_at = now
    admitted.content_events = count


async def settle_stream(access: Access, admitted: Admitted, outcome: Outcome,
                        usage: dict | None, running: RunningUsage | None = None) -> None:
    # The client got 200 and the stream's head: a stream that broke is the engine's fault.
    status, error_class = ((200, ErrorClass.ENGINE_ERROR) if outcome is Outcome.ERROR
                           else (200 if outcome is Outcome.OK else None, None))
    if usage is not None:
        prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    else:  # cut short (cancelled or broken): the engine's counts at the last relayed event
        # (one token per event only if the engine gave none, which vLLM always does)
        totals = running.totals() if running is not None else None
        prompt, completion = totals or (None, admitted.content_events)
    try:
        await access.finish(admitted, outcome, prompt, completion, http_status=status,
                            error_class=error_class)
    finally:
        # The response went out as 200; a stream that broke says so in error.type.
        telemetry.end_span(admitted.span, HTTPStatus.OK, error=None if outcome in (
            Outcome.OK, Outcome.CLIENT_CANCELLED) else str(outcome))


async def relay(call: EngineCall, first: str | None, access: Access, admitted: Admitted,
                wants: StreamWants, bound: InFlightBound) -> AsyncIterator[str]:
    """Forward each SSE event as the engine yields it, take the token counts from the usage
    event, and commit the usage record before the stream's last event. A broken stream ends
    with an error event; a client that goes away cancels the engine request. The first
    token's delay goes to the endpoint's `bound` (is its queue standing?)."""
    usage: dict | None = None
    running = RunningUsage(wants)
    events = 0
    outcome = Outcome.OK
    try:
        async for event in engine_events(call, first, admitted):
            if event == DONE:
                break
            if is_usage_event(event):
                usage = json.loads(event[len("data: "):])["usage"]
                if not wants.usage:
                    continue
            elif event.startswith('data: {"error"'):
                outcome = Outcome.ERROR
            else:
                event = shaped_event(running.take(event), wants.token_ids)
                events += 1
                if events == 1 and admitted.span is not None:
                    telemetry.describe_response(admitted.span, event_body(event))
                content_seen(admitted, bound, events)
            yield event
        await settle_stream(access, admitted, outcome, usage, running)
        yield DONE
    except asyncio.CancelledError:
        call.cancel()
        # The client is gone: still settle and record, outside this cancelled task.
        asyncio.get_running_loop().create_task(
            settle_stream(access, admitted, Outcome.CLIENT_CANCELLED, usage, running))
        raise
    except Exception as exc:  # the engine failed mid-stream: say so instead of cutting silently
        logger.warning("stream broke: %r", exc)
        call.cancel()
        await settle_stream(access, admitted, Outcome.ERROR, usage, running)
        yield sse_error_event(HTTPStatus.SERVICE_UNAVAILABLE,
                              f"the engine failed mid-stream: {exc}")
        yield DONE
    finally:
        call.cancel()
