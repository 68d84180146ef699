"""A request whose engine replica dies before its first chunk is sent again; one that had
started streaming is not (its client already has part of an answer)."""

from __future__ import annotations

import pytest
from ray.exceptions import ActorDiedError

from deployments import targets
from deployments.targets import HandleCall


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


async def test_dead_before_first_chunk_is_sent_again(monkeypatch):
    monkeypatch.setattr(targets, "RESEND_PAUSE_S", 0)
    call = HandleCall(sender(Replica([], dies_after=0), Replica([], dies_after=0),
                             Replica([{"status": 200}, "a", "b"])))
    assert await call.head() == {"status": 200}
    assert [c async for c in call.chunks()] == ["a", "b"]
    assert call.resent == 2


async def test_dead_mid_stream_is_not_sent_again(monkeypatch):
    monkeypatch.setattr(targets, "RESEND_PAUSE_S", 0)
    second = Replica([{"status": 200}, "x"])
    call = HandleCall(sender(Replica([{"status": 200}, "a", "b"], dies_after=2), second))
    assert await call.head() == {"status": 200}
    with pytest.raises(ActorDiedError):
        _ = [c async for c in call.chunks()]
    assert call.resent == 0 and second.given == 0


async def test_resending_stops_after_its_window(monkeypatch):
    monkeypatch.setattr(targets, "RESEND_PAUSE_S", 0)
    monkeypatch.setattr(targets, "RESEND_WINDOW_S", 0)
    call = HandleCall(sender(Replica([], dies_after=0), Replica([{"status": 200}])))
    with pytest.raises(ActorDiedError):
        await call.head()
    assert call.resent == 0
