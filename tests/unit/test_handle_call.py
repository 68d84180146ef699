"""A request whose engine replica dies before its first chunk is sent again; one that had
started streaming is not (its client already has part of an answer). The gateway's in-flight
bound per endpoint: a request beyond it is refused without being sent, and each request gives
its slot back however it ends."""

from __future__ import annotations

import asyncio
import time

import pytest
from ray.exceptions import ActorDiedError

from deployments import targets
from deployments.targets import HandleCall
from serving.gateway.routing import EndpointOverloaded, InFlightBound


class Replica:
    """What a DeploymentResponseGenerator gives: chunks, or the replica's death."""

    def __init__(self, chunks: list, dies_after: int | None = None) -> None:
        self.chunks = list(chunks)
        self.dies_after = dies_after
        self.given = 0
        self.cancelled = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.dies_after is not None and self.given >= self.dies_after:
            raise ActorDiedError()
        if not self.chunks:
            raise StopAsyncIteration
        self.given += 1
        return self.chunks.pop(0)

    def cancel(self) -> None:
        self.cancelled = True


def sender(*replicas: Replica):
    sent = list(replicas)
    return lambda: sent.pop(0)


def unbounded(send) -> HandleCall:
    return HandleCall(send, InFlightBound(None), "m")


async def test_dead_before_first_chunk_is_sent_again(monkeypatch):
    monkeypatch.setattr(targets, "RESEND_PAUSE_S", 0)
    call = unbounded(sender(Replica([], dies_after=0), Replica([], dies_after=0),
                             Replica([{"status": 200}, "a", "b"])))
    assert await call.head() == {"status": 200}
    assert [c async for c in call.chunks()] == ["a", "b"]
    assert call.resent == 2


async def test_dead_mid_stream_is_not_sent_again(monkeypatch):
    monkeypatch.setattr(targets, "RESEND_PAUSE_S", 0)
    second = Replica([{"status": 200}, "x"])
    call = unbounded(sender(Replica([{"status": 200}, "a", "b"], dies_after=2), second))
    assert await call.head() == {"status": 200}
    with pytest.raises(ActorDiedError):
        _ = [c async for c in call.chunks()]
    assert call.resent == 0 and second.given == 0


async def test_resending_stops_after_its_window(monkeypatch):
    monkeypatch.setattr(targets, "RESEND_PAUSE_S", 0)
    monkeypatch.setattr(targets, "RESEND_WINDOW_S", 0)
    call = unbounded(sender(Replica([], dies_after=0), Replica([{"status": 200}])))
    with pytest.raises(ActorDiedError):
        await call.head()
    assert call.resent == 0


async def test_beyond_the_bound_a_request_is_refused_unsent():
    bound = InFlightBound(1)
    first = Replica([{"status": 200, "stream": True, "first": "a"}, "b"])
    streaming = HandleCall(sender(first), bound, "m")
    await streaming.head()
    never = Replica([{"status": 200}])
    with pytest.raises(EndpointOverloaded, match="1 requests in flight"):
        await HandleCall(sender(never), bound, "m").head()
    assert never.given == 0 and bound.in_flight == 1
    assert [c async for c in streaming.chunks()] == ["b"]
    assert bound.in_flight == 0  # the stream's end gives its slot back


@pytest.mark.parametrize("ending", ["answered", "cancelled", "died", "collected"])
async def test_every_ending_gives_the_slot_back(monkeypatch, ending):
    monkeypatch.setattr(targets, "RESEND_WINDOW_S", 0)
    bound = InFlightBound(1)
    if ending == "answered":  # a whole (unstreamed) answer
        await HandleCall(sender(Replica([{"status": 200, "body": {}}])), bound, "m").head()
    elif ending == "died":
        with pytest.raises(ActorDiedError):
            await HandleCall(sender(Replica([], dies_after=0)), bound, "m").head()
    else:
        replica = Replica([{"status": 200, "stream": True, "first": "a"}, "b"])
        call = HandleCall(sender(replica), bound, "m")
        await call.head()
        assert bound.in_flight == 1
        if ending == "cancelled":
            call.cancel()
            assert replica.cancelled
        else:  # the client left before its stream was read
            del call
    assert bound.in_flight == 0


async def test_beyond_the_slots_a_request_waits_its_turn_unsent():
    bound = InFlightBound(3, slots=1)
    first = Replica([{"status": 200, "stream": True, "first": "a"}, "b"])
    running = HandleCall(sender(first), bound, "m")
    await running.head()
    second, third = Replica([{"status": 200, "body": {}}]), Replica([{"status": 200}])
    waiting = asyncio.ensure_future(HandleCall(sender(second), bound, "m").head())
    leaving = asyncio.ensure_future(HandleCall(sender(third), bound, "m").head())
    await asyncio.sleep(0.05)
    assert not waiting.done() and second.given == 0  # queued in the gateway, not sent
    assert bound.in_flight == 3
    leaving.cancel()  # its client left while it waited: its place is given back
    await asyncio.sleep(0)
    assert bound.in_flight == 2 and third.given == 0

    assert [c async for c in running.chunks()] == ["b"]  # the first ends: the second's turn
    assert await asyncio.wait_for(waiting, 5) == {"status": 200, "body": {}}
    assert second.given == 1 and bound.in_flight == 0
    # every turn given back: the next request is sent at once
    assert await HandleCall(sender(Replica([{"status": 200, "body": {}}])), bound, "m").head()
    assert bound.in_flight == 0


async def test_a_line_that_waited_too_long_refuses_newcomers():
    bound = InFlightBound(10, slots=1)
    running = HandleCall(sender(Replica([{"status": 200, "stream": True, "first": "a"}, "b"])),
                         bound, "m")
    await running.head()
    now = time.monotonic()
    assert bound.oldest_wait(now) == 0 and bound.why_refused(now, 2.0) is None
    waiting = asyncio.ensure_future(
        HandleCall(sender(Replica([{"status": 200, "body": {}}])), bound, "m").head())
    await asyncio.sleep(0.05)
    assert bound.oldest_wait(time.monotonic()) >= 0.05
    # 0.6 s later, the first in line has waited more than a quarter of a 2 s target
    later = time.monotonic() + 0.6
    assert "queue stands" in bound.why_refused(later, 2.0)
    assert bound.why_refused(later, 4.0) is None  # a 4 s target still has time
    [_ async for _ in running.chunks()]
    await asyncio.wait_for(waiting, 5)
    assert not bound.waiting and bound.why_refused(later, 2.0) is None
