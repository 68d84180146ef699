"""A request whose engine replica dies before its first chunk is sent again; one that had
started streaming is not (its client already has part of an answer). The gateway's in-flight
bound per endpoint: a request beyond it is refused without being sent, and each request gives
its slot back however it ends."""

from __future__ import annotations

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
