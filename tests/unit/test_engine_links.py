"""Engine links over real sockets on this machine: the handshake keeps strangers out, a
request's reply (JSON or a stream) arrives whole and in order, a cancelled request is aborted
in the engine, and a request whose replica went away before answering is sent to another
one, while one that had started streaming breaks. The gateway's in-flight bound: a request
beyond it is refused unsent, one beyond the slots waits its turn, and every ending gives its
slot back. The engine here is a stand-in for EngineHost.handle; the e2e tests run the real
one."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from serving.engine.host import EngineReply
from serving.targets.links import frames as link_module
from serving.targets.bound import InFlightBound
from serving.targets.deployment import DeploymentCall, ReplicaLinks
from serving.targets.links.directory import LinkAddress
from serving.targets.errors import EndpointOverloaded, EndpointUnavailable
from serving.targets.links import LinkBroken, LinkRefused, LinkServer, connect
from serving.targets.links.frames import HEADER, MAGIC, REQUEST

SECRET = os.urandom(32)


class Engine:
    """EngineHost.handle's shape: a JSON reply, or a stream of SSE events released one at a
    time by `step` (or all at once when `steps` is None)."""

    def __init__(self, events: int = 3, steps: asyncio.Queue | None = None,
                 fail_first: bool = False) -> None:
        self.events = events
        self.steps = steps
        self.fail_first = fail_first
        self.started: list[str] = []
        self.closed: list[str] = []

    async def handle(self, kind, body, request_id):
        self.started.append(request_id)
        if self.fail_first and len(self.started) == 1:
            raise RuntimeError("boom")
        if not body.get("stream"):
            return EngineReply(200, body={"id": request_id, "usage": {"completion_tokens": 1}})

        async def stream():
            try:
                for i in range(self.events):
                    if self.steps is not None:
                        await self.steps.get()
                    yield f"data: {request_id}-{i}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                self.closed.append(request_id)

        return EngineReply(200, stream=stream())


async def serve(engine: Engine, secret: bytes = SECRET) -> LinkServer:
    server = LinkServer(engine.handle, secret, "127.0.0.1")
    await server.start()
    return server


def pool(*servers: LinkServer, secret: bytes = SECRET) -> ReplicaLinks:
    links = ReplicaLinks("m", secret, wanted=lambda: None)
    links.update(LinkAddress("app", "engine-m", f"r{i}", *s.address, time.time())
                 for i, s in enumerate(servers))
    return links


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.005)


def call(links: ReplicaLinks, bound: InFlightBound | None = None, stream: bool = True,
         request_id: str = "q") -> DeploymentCall:
    return DeploymentCall(links, "completion", {"stream": stream}, request_id,
                          bound or InFlightBound(None), "m")


async def read(c: DeploymentCall) -> list[str]:
    head = await c.head()
    return [head["first"]] + [e async for e in c.chunks()]


# -- the link itself -------------------------------------------------------------------------


async def test_a_stream_arrives_in_order_and_a_json_reply_whole():
    server = await serve(Engine(events=3))
    links = pool(server)
    assert await read(call(links, request_id="a")) == [
        "data: a-0\n\n", "data: a-1\n\n", "data: a-2\n\n", "data: [DONE]\n\n"]
    head = await call(links, stream=False, request_id="b").head()
    assert head == {"status": 200, "body": {"id": "b", "usage": {"completion_tokens": 1}}}
    assert server.in_flight == 0
    server.close()


async def test_many_streams_share_one_link_and_each_gets_its_own_events():
    server = await serve(Engine(events=20))
    links = pool(server)
    replies = await asyncio.gather(*(read(call(links, request_id=f"s{i}")) for i in range(30)))
    for i, events in enumerate(replies):
        assert events == [f"data: s{i}-{k}\n\n" for k in range(20)] + ["data: [DONE]\n\n"]
    assert len(links.links) == 1
    server.close()


async def test_a_wrong_secret_is_refused_on_both_sides():
    engine = Engine()
    server = await serve(engine)
    with pytest.raises(LinkRefused):
        await connect(server.address, os.urandom(32), "r0")
    impostor = await serve(Engine(), secret=os.urandom(32))
    with pytest.raises(LinkRefused):
        await connect(impostor.address, SECRET, "r0")
    assert engine.started == []
    server.close()
    impostor.close()


async def test_a_stranger_without_the_handshake_cannot_submit_requests():
    engine = Engine()
    server = await serve(engine)
    reader, writer = await asyncio.open_connection(*server.address)
    assert (await reader.readexactly(len(MAGIC) + 32)).startswith(MAGIC)
    payload = b'{"kind":"completion","body":{},"request_id":"x"}'
    writer.write(bytes(64) + HEADER.pack(REQUEST, 1, len(payload)) + payload)
    await writer.drain()
    assert await reader.read() == b""  # closed on the bad proof
    assert engine.started == []
    server.close()


async def test_a_malformed_frame_closes_the_link_and_breaks_its_streams():
    server = await serve(Engine(events=2, steps=asyncio.Queue()))
    link = await connect(server.address, SECRET, "r0")
    stream = link.request("completion", {"stream": True}, "a")
    await until(lambda: server.in_flight == 1)
    link.data_received(HEADER.pack(99, 1, 0))  # a kind no engine sends
    with pytest.raises(LinkBroken):
        await stream.first()
    await until(lambda: server.in_flight == 0)
    server.close()


async def test_cancelling_a_stream_aborts_it_in_the_engine():
    steps = asyncio.Queue()
    engine = Engine(events=5, steps=steps)
    server = await serve(engine)
    links = pool(server)
    c = call(links, request_id="a")
    steps.put_nowait(None)
    head = asyncio.ensure_future(c.head())
    assert (await head)["first"] == "data: a-0\n\n"
    c.cancel()
    await until(lambda: engine.closed == ["a"])
    assert server.in_flight == 0
    server.close()


async def test_a_silent_link_is_given_up(monkeypatch):
    monkeypatch.setattr(link_module, "PING_PERIOD_S", 0.05)
    monkeypatch.setattr(link_module, "LINK_TIMEOUT_S", 0.2)
    server = await serve(Engine(events=2, steps=asyncio.Queue()))
    link = await connect(server.address, SECRET, "r0")
    stream = link.request("completion", {"stream": True}, "a")
    for end in list(server._links):  # the replica freezes: it reads nothing, answers nothing
        end.transport.pause_reading()
    with pytest.raises(LinkBroken) as broken:
        await asyncio.wait_for(stream.first(), 5)
    assert broken.value.resendable
    server.close()


# -- sending again, draining -----------------------------------------------------------------


async def test_a_replica_gone_before_answering_is_replaced_by_another():
    steps = asyncio.Queue()
    doomed_engine = Engine(steps=steps)
    doomed = await serve(doomed_engine)
    healthy = await serve(Engine(events=1))
    links = ReplicaLinks("m", SECRET, wanted=lambda: None)
    links.update([LinkAddress("app", "engine-m", "r0", *doomed.address, time.time())])
    await until(lambda: links.usable == 1)
    c = call(links, request_id="a")
    head = asyncio.ensure_future(c.head())
    await until(lambda: doomed_engine.started == ["a"])
    links.update([LinkAddress("app", "engine-m", "r1", *healthy.address, time.time())])
    await until(lambda: links.usable == 2)
    doomed.close()  # its process dies: the link drops before any event was sent
    assert (await asyncio.wait_for(head, 5))["first"] == "data: a-0\n\n"
    assert c.resent == 1
    healthy.close()


async def test_a_replica_gone_mid_stream_breaks_the_stream_without_resending():
    steps = asyncio.Queue()
    server = await serve(Engine(events=3, steps=steps))
    other = await serve(Engine())
    links = pool(server, other)
    await until(lambda: links.usable == 2)
    links.links.pop("r1").close()  # only the first replica takes it
    c = call(links, request_id="a")
    steps.put_nowait(None)
    await c.head()
    server.close()
    with pytest.raises(LinkBroken) as broken:
        _ = [e async for e in c.chunks()]
    assert not broken.value.resendable and c.resent == 0
    other.close()


async def test_an_engine_failure_is_not_sent_again():
    server = await serve(Engine(fail_first=True))
    links = pool(server)
    with pytest.raises(LinkBroken, match="boom"):
        await call(links, request_id="a").head()
    server.close()


async def test_a_draining_replica_finishes_its_streams_and_the_next_request_goes_elsewhere():
    steps = asyncio.Queue()
    draining_engine = Engine(events=2, steps=steps)
    draining = await serve(draining_engine)
    links = pool(draining)
    await until(lambda: links.usable == 1)
    c = call(links, request_id="a")
    steps.put_nowait(None)
    await c.head()
    drained = asyncio.ensure_future(draining.drain(5))
    await until(lambda: links.usable == 0)  # told: it takes no more
    other = await serve(Engine(events=1))
    links.update([LinkAddress("app", "engine-m", "r9", *other.address, time.time())])
    assert await read(call(links, request_id="b")) == ["data: b-0\n\n", "data: [DONE]\n\n"]
    steps.put_nowait(None)
    assert [e async for e in c.chunks()] == ["data: a-1\n\n", "data: [DONE]\n\n"]
    assert await drained is True
    draining.close()
    other.close()


async def test_no_replica_within_the_window_is_unavailable(monkeypatch):
    from serving.targets import deployment

    monkeypatch.setattr(deployment, "REPLICA_WAIT_S", 0.2)
    links = ReplicaLinks("m", SECRET, wanted=lambda: None)
    bound = InFlightBound(4)
    with pytest.raises(EndpointUnavailable, match="no engine replica reachable"):
        await call(links, bound).head()
    assert bound.in_flight == 0


# -- the bound -------------------------------------------------------------------------------


async def test_beyond_the_bound_a_request_is_refused_unsent():
    engine = Engine(events=2)
    server = await serve(engine)
    links = pool(server)
    bound = InFlightBound(1)
    streaming = call(links, bound, request_id="a")
    await streaming.head()
    with pytest.raises(EndpointOverloaded, match="1 requests in flight"):
        await call(links, bound, request_id="never").head()
    assert engine.started == ["a"] and bound.in_flight == 1
    assert [e async for e in streaming.chunks()] == ["data: a-1\n\n", "data: [DONE]\n\n"]
    assert bound.in_flight == 0  # the stream's end gives its slot back
    server.close()


@pytest.mark.parametrize("ending", ["answered", "cancelled", "broken", "collected"])
async def test_every_ending_gives_the_slot_back(ending):
    steps = asyncio.Queue()
    steps.put_nowait(None)  # the first event, then the stream waits
    server = await serve(Engine(events=2, steps=steps))
    links = pool(server)
    bound = InFlightBound(1)
    if ending == "answered":  # a whole (unstreamed) answer
        await call(links, bound, stream=False).head()
    elif ending == "broken":
        c = call(links, bound)
        await c.head()
        server.close()
        with pytest.raises(LinkBroken):
            _ = [e async for e in c.chunks()]
    else:
        c = call(links, bound)
        await c.head()
        assert bound.in_flight == 1
        if ending == "cancelled":
            c.cancel()
        else:  # the client left before its stream was read
            del c
    assert bound.in_flight == 0
    server.close()


async def test_beyond_the_slots_a_request_waits_its_turn_unsent():
    steps = asyncio.Queue()
    engine = Engine(events=2, steps=steps)
    server = await serve(engine)
    links = pool(server)
    bound = InFlightBound(3, slots=1)
    running = call(links, bound, request_id="a")
    steps.put_nowait(None)
    await running.head()
    waiting = asyncio.ensure_future(call(links, bound, stream=False, request_id="b").head())
    leaving = asyncio.ensure_future(call(links, bound, stream=False, request_id="c").head())
    await asyncio.sleep(0.05)
    assert not waiting.done() and engine.started == ["a"]  # queued in the gateway, not sent
    assert bound.in_flight == 3
    leaving.cancel()  # its client left while it waited: its place is given back
    await asyncio.sleep(0)
    assert bound.in_flight == 2
    steps.put_nowait(None)
    assert [e async for e in running.chunks()] == ["data: a-1\n\n", "data: [DONE]\n\n"]
    assert (await asyncio.wait_for(waiting, 5))["body"]["id"] == "b"
    assert engine.started == ["a", "b"] and bound.in_flight == 0
    server.close()


async def test_a_slow_reader_does_not_hold_back_another_stream_on_the_same_link():
    server = await serve(Engine(events=50))
    links = pool(server)
    slow = call(links, request_id="slow")
    await slow.head()  # then never read: its events pile up in the gateway, not the link
    fast = await read(call(links, request_id="fast"))
    assert len(fast) == 51 and fast[-1] == "data: [DONE]\n\n"
    assert len([e async for e in slow.chunks()]) == 50  # all of it still there, in order
    server.close()
