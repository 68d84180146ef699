"""Bounded queues: the gateway's in-flight bound per endpoint, its refusal of requests that
would wait in a standing queue past their TTFT target, and its answer when an endpoint is
full: 503, code
`endpoint_overloaded`, Retry-After, and a usage record without tokens. The store and the
counters are real (SQLite, local counters); the engines are stand-ins."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest

from serving.engine.card import engine_card
from serving.engine.host import EngineReply
from serving.gateway import build_gateway_app
from serving.gateway.access import Access
from serving.targets.bound import (
    EndpointOverloaded,
    InFlightBound,
    QueueBudget,
    StandingDelay,
    TokenPace,
    spread_retry,
    tokens_too_slow,
    waits_too_long,
)
from serving.targets.local import LocalCall, LocalTarget
from serving.tenancy import LocalAdmissionCounters, Outcome
from tests.unit.stores import sqlite_store

BODY = {"model": "m", "prompt": "hi", "max_tokens": 2}
OK_BODY = {"id": "x", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}


def test_bound_admits_up_to_its_limit_and_again_after_release():
    bound = InFlightBound(2)
    assert bound.try_acquire() and bound.try_acquire()
    assert not bound.try_acquire()
    bound.release()
    assert bound.try_acquire()
    assert bound.in_flight == 2


def test_no_limit_admits_everything():
    bound = InFlightBound(None)
    assert all(bound.try_acquire() for _ in range(10_000))


def test_standing_delay_is_the_fastest_first_token_of_the_last_interval():
    delay = StandingDelay(interval_s=1.0)
    assert delay.shortest(0.0) is None
    delay.observe(0.0, 1.5)
    delay.observe(0.5, 0.3)
    assert delay.shortest(0.9) == 0.3
    assert delay.shortest(1.2) == 0.3  # the 1.5 s one has left the interval, 0.3 s not yet
    delay.observe(1.4, 0.8)
    assert delay.shortest(1.6) == 0.8
    assert delay.shortest(2.5) is None  # nothing lately: no sign of a queue


@pytest.mark.parametrize("in_flight, slots, shortest, oldest_wait, target, refused", [
    (16, 16, 1.4, 0.0, 2.0, True),     # all slots taken, 1.4 s > 0.5 x 2 s
    (30, 16, 0.9, 0.0, 2.0, False),    # a queue, but it drains: 0.9 s <= 1 s
    (15, 16, 5.0, 0.0, 2.0, False),    # a free slot: a slow first token is the prefill
    (30, 16, None, 0.0, 2.0, False),   # no first token lately: nothing to judge by
    (30, None, 5.0, 0.0, 2.0, False),  # slots unknown
    (30, 16, 1.4, 0.0, 4.0, False),    # a tenant with a 4 s target still has time: 1.4 <= 2
    (30, 16, None, 0.6, 2.0, True),    # the first in the gateway's line waited 0.6 > 0.25 x 2
    (30, 16, 0.2, 0.6, 2.0, True),     # ... however fast the last first tokens were
    (30, 16, None, 0.4, 2.0, False),   # it waited 0.4 s: there is time
    (30, 16, None, 0.6, 4.0, False),   # ... and 0.6 s leaves time for a 4 s target
])
def test_waits_too_long(in_flight, slots, shortest, oldest_wait, target, refused):
    budget = QueueBudget(line=0.25, first_token=0.5)
    assert waits_too_long(in_flight, slots, shortest, oldest_wait, target, budget) is refused


def test_token_pace_is_the_mean_gap_of_the_last_full_interval():
    pace = TokenPace(interval_s=1.0)
    assert pace.mean_gap(0.0) is None
    pace.observe(0.0, 0.10)
    pace.observe(0.4, 0.30)
    assert pace.mean_gap(0.9) is None  # the first interval has not ended
    pace.observe(1.1, 0.05)  # ends it: (0.10 + 0.30) / 2
    assert pace.mean_gap(1.2) == pytest.approx(0.20)
    pace.observe(2.3, 0.07)  # ends the second, [1.1, 2.1): 0.05
    assert pace.mean_gap(2.4) == pytest.approx(0.05)
    assert pace.mean_gap(3.0) == pytest.approx(0.05)
    assert pace.mean_gap(3.4) == pytest.approx(0.07)  # [2.3, 3.3)
    assert pace.mean_gap(4.5) is None  # no tokens lately: nothing to judge by


@pytest.mark.parametrize("in_flight, slots, gap, target, refused", [
    (100, 256, 0.17, 0.2, True),    # a quarter of the slots run, 0.17 s > 0.8 x 0.2 s
    (100, 256, 0.15, 0.2, False),   # ... at 0.15 s the tokens keep their pace
    (40, 256, 0.50, 0.2, False),    # a light load: slow tokens are the model's
    (64, 256, 0.17, 0.2, True),     # a quarter exactly
    (100, 256, None, 0.2, False),   # no tokens lately
    (100, None, 0.50, 0.2, False),  # slots unknown
    (100, 256, 0.17, 0.5, False),   # a tenant with a 0.5 s target
])
def test_tokens_too_slow(in_flight, slots, gap, target, refused):
    budget = QueueBudget(token_gap=0.8, loaded=0.25)
    assert tokens_too_slow(in_flight, slots, gap, target, budget) is refused


def test_an_endpoint_whose_streams_get_slow_tokens_refuses_newcomers_for_the_itl_target():
    bound = InFlightBound(600, slots=256)
    bound.in_flight = 120
    for at in range(20):  # 120 streams a token each 0.18 s
        bound.pace.observe(10.0 + at * 0.05, 0.18)
    bound.pace.observe(11.05, 0.18)
    assert "too slowly for your inter-token latency target (0.2 s)" in bound.why_refused(
        11.1, 2.0, 0.2)
    assert bound.why_refused(11.1, 2.0, 0.5) is None  # a laxer tenant is served
    assert bound.why_refused(11.1, 2.0) is None  # no ITL target: not judged
    bound.in_flight = 50  # the batch has shrunk below a quarter of the slots
    assert bound.why_refused(11.1, 2.0, 0.2) is None


def test_a_standing_queue_is_judged_against_the_replicas_up_not_those_it_may_grow_to():
    # An autoscaled endpoint of up to 4 replicas of 16 at 1 up: 20 in flight fill what is
    # up, and first tokens come late (1.5 s > half of 2 s): the 4 queued in the engine
    # stand. Judged against its 64 slots, nothing would stand until 64 were in flight.
    up = [1]
    bound = InFlightBound(80, slots=64, slots_up=lambda: 16 * up[0])
    bound.in_flight = 20
    bound.delay.observe(10.0, 1.5)
    assert bound.running_slots() == 16
    assert "stands too long" in bound.why_refused(10.1, 2.0)
    unjudged = InFlightBound(80, slots=64)
    unjudged.in_flight = 20
    unjudged.delay.observe(10.0, 1.5)
    assert unjudged.why_refused(10.1, 2.0) is None
    up[0] = 2  # a second replica is up: 20 of 32 leaves room, nothing stands
    assert bound.running_slots() == 32 and bound.why_refused(10.1, 2.0) is None
    up[0] = 5  # never more than the slots
    assert bound.running_slots() == 64


def test_a_deployment_target_counts_the_slots_of_the_replicas_it_has_links_to():
    from serving.targets.deployment import DeploymentTarget

    links = SimpleNamespace(usable=1)
    target = DeploymentTarget("m", links, None, 80, 64, 16)
    assert target.bound.running_slots() == 16
    links.usable = 3
    assert target.bound.running_slots() == 48
    assert DeploymentTarget("m", links, None, 80, 64).bound.running_slots() == 64


@pytest.mark.parametrize("after, draw, ms", [(1, 0.0, "1000"), (1, 0.4321, "1432"),
                                               (1, 0.9999, "2000"), (3, 0.5, "4500")])
def test_spread_retry_is_never_sooner_than_retry_after(after, draw, ms):
    assert spread_retry(after, draw) == {"retry-after": str(after), "retry-after-ms": ms}


class GatedHost:
    """Stands in for EngineHost: each request waits for `gate`, then answers a body, or a
    stream of two events when the request says `stream`."""

    args = SimpleNamespace(model="m")
    max_model_len = 64

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = 0

    def card(self) -> dict:
        return engine_card(self.args.model, self.max_model_len)

    async def handle(self, kind, body, request_id=None) -> EngineReply:
        self.started += 1
        await self.gate.wait()
        if body.get("stream"):
            async def events():
                yield "data: {}\n\n"
                yield "data: [DONE]\n\n"
            return EngineReply(200, stream=events())
        return EngineReply(200, body=OK_BODY)


async def test_local_call_holds_its_slot_until_the_reply_or_stream_ends():
    host = GatedHost()
    host.gate.set()
    bound = InFlightBound(1)
    plain = LocalCall(host, "completion", {}, "a", bound, "m")
    assert (await plain.head())["body"] == OK_BODY
    assert bound.in_flight == 0

    stream = LocalCall(host, "completion", {"stream": True}, "b", bound, "m")
    assert (await stream.head())["stream"] is True
    assert bound.in_flight == 1
    with pytest.raises(EndpointOverloaded):
        await LocalCall(host, "completion", {}, "c", bound, "m").head()
    assert [c async for c in stream.chunks()] == ["data: {}\n\n", "data: [DONE]\n\n"]
    assert bound.in_flight == 0

    cancelled = LocalCall(host, "completion", {"stream": True}, "d", bound, "m")
    await cancelled.head()
    cancelled.cancel()
    cancelled.cancel()  # a second cancel gives nothing back twice
    assert bound.in_flight == 0


async def test_a_refused_call_takes_no_slot_and_never_reaches_the_engine():
    host = GatedHost()
    bound = InFlightBound(1)
    first = asyncio.ensure_future(LocalCall(host, "completion", {}, "a", bound, "m").head())
    await asyncio.sleep(0)
    with pytest.raises(EndpointOverloaded):
        await LocalCall(host, "completion", {}, "b", bound, "m").head()
    assert host.started == 1 and bound.in_flight == 1
    host.gate.set()
    await first
    assert bound.in_flight == 0


class FullTarget:
    """An endpoint whose bound filled while the request waited: head() raises as
    InFlightBound.take does."""

    name = "m"
    bound = InFlightBound(None)

    def call(self, kind, body, request_id):
        class Call:
            async def head(self):
                raise EndpointOverloaded("endpoint `m` is at capacity (4 requests in flight)")

            def cancel(self):
                pass

        return Call()

    async def ready(self):
        return True

    async def card(self):
        return {"root": "m", "max_model_len": 64}


@pytest.fixture
def store(tmp_path):
    store = sqlite_store(tmp_path, "t", "m")
    yield store
    store.close()


def _gateway(store, target):
    access = Access(store, LocalAdmissionCounters())
    app = build_gateway_app({"m": target}, access)
    key = store.create_key("t").plaintext
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                             headers={"authorization": f"Bearer {key}"})


def _ledger(store):
    now = datetime.now(UTC)
    return store.usage_records("t", now - timedelta(hours=1), now + timedelta(hours=1))


def _assert_overloaded(resp):
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == "1"
    assert 1000 <= int(resp.headers["retry-after-ms"]) <= 2000
    err = resp.json()["error"]
    assert err["code"] == "endpoint_overloaded"
    assert err["type"] == "service_unavailable_error"


async def test_a_full_endpoint_answers_503_with_retry_after(store):
    async with _gateway(store, FullTarget()) as gw:
        resp = await gw.post("/v1/completions", json=BODY)
    _assert_overloaded(resp)
    [record] = _ledger(store)
    assert record.outcome is Outcome.ERROR
    assert (record.prompt_tokens, record.completion_tokens) == (0, 0)


async def test_colocated_bound_refuses_the_excess_at_once_and_recovers(store):
    host = GatedHost()
    target = LocalTarget("m", host, max_in_flight=2)
    async with _gateway(store, target) as gw:
        held = [asyncio.ensure_future(gw.post("/v1/completions", json=BODY)) for _ in range(2)]
        async def both_started():
            while host.started < 2:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(both_started(), 30)
        refused = await asyncio.gather(*(gw.post("/v1/completions", json=BODY) for _ in range(5)))
        for resp in refused:
            _assert_overloaded(resp)
        # told to come back at different times, not as one wave
        assert len({resp.headers["retry-after-ms"] for resp in refused}) > 1
        assert host.started == 2  # the refused requests never reached the engine
        host.gate.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        assert target.bound.in_flight == 0
        after = await gw.post("/v1/completions", json=BODY)
        assert after.status_code == 200
    outcomes = sorted(r.outcome for r in _ledger(store))
    assert outcomes.count(Outcome.OK) == 3 and outcomes.count(Outcome.ERROR) == 5


async def test_a_standing_queue_refuses_new_requests_before_the_engine(store):
    host = GatedHost()
    target = LocalTarget("m", host, max_in_flight=10, slots=1)
    async with _gateway(store, target) as gw:
        streamed = {**BODY, "stream": True}
        held = asyncio.ensure_future(gw.post("/v1/completions", json=streamed))
        while host.started < 1:
            await asyncio.sleep(0.01)
        # The slot is taken and the last first token came 1.5 s after its request: a 2 s
        # target (the default) cannot be kept by a request that queues now.
        target.bound.delay.observe(asyncio.get_running_loop().time(), 1.5)
        _assert_overloaded(await gw.post("/v1/completions", json=streamed))
        assert host.started == 1
        host.gate.set()
        assert (await held).status_code == 200
        # The streamed request's own first token came fast: the queue no longer stands.
        assert target.bound.delay.shortest(asyncio.get_running_loop().time()) < 1.0
        assert (await gw.post("/v1/completions", json=streamed)).status_code == 200
    outcomes = sorted(r.outcome for r in _ledger(store))
    assert outcomes.count(Outcome.OK) == 2 and outcomes.count(Outcome.ERROR) == 1


async def test_a_full_endpoint_refuses_before_the_tenants_quota_is_touched(store):
    # Two requests a minute: if the refused requests were admitted first, the second of them
    # would meet the quota (429) and the last request below could not be served.
    store.set_quota("t", requests_per_minute=2)
    host = GatedHost()
    target = LocalTarget("m", host, max_in_flight=1, slots=1)
    async with _gateway(store, target) as gw:
        held = asyncio.ensure_future(gw.post("/v1/completions", json=BODY))
        while host.started < 1:
            await asyncio.sleep(0.01)
        for _ in range(3):
            resp = await gw.post("/v1/completions", json=BODY)
            _assert_overloaded(resp)
            assert "at capacity (1 requests in flight)" in resp.json()["error"]["message"]
        host.gate.set()
        assert (await held).status_code == 200
        assert (await gw.post("/v1/completions", json=BODY)).status_code == 200
    outcomes = sorted(r.outcome for r in _ledger(store))
    assert outcomes.count(Outcome.OK) == 2 and outcomes.count(Outcome.ERROR) == 3


class _EngineStream:
    """A stream call whose engine makes `count` events `gap_s` apart (0: made already)."""

    def __init__(self, count: int, gap_s: float = 0.0) -> None:
        self.count, self.gap_s = count, gap_s

    async def chunks(self):
        for number in range(self.count):
            if self.gap_s:
                await asyncio.sleep(self.gap_s)
            yield f"data: {number}\n\n"


async def _pace_relayed(call: _EngineStream, read_pause_s: float) -> float | None:
    """Relay call's events as relay.relay does, to a client that takes read_pause_s to read
    each; the endpoint's mean token gap after."""
    import time

    from serving.gateway.relay import content_seen, engine_events

    bound = InFlightBound(None, slots=4)
    admitted = SimpleNamespace(started=time.monotonic(), first_token_at=None,
                               last_token_at=None, asked_at=None, content_events=0)
    count = 0
    async for _ in engine_events(call, None, admitted):
        count += 1
        content_seen(admitted, bound, count)
        await asyncio.sleep(read_pause_s)  # the client reads it
    return bound.pace.mean_gap(time.monotonic())


async def test_a_client_that_reads_slowly_does_not_stretch_the_endpoints_token_pace():
    # The engine made 30 tokens at once; its client reads one each 50 ms. Timed from the
    # last token, the endpoint's pace would read 50 ms, and a tenant's streams left unread
    # could have other tenants' requests refused for slow tokens.
    gap = await _pace_relayed(_EngineStream(30), read_pause_s=0.05)
    assert gap is not None and gap < 0.025
    # An engine that is slow shows: 40 tokens 30 ms apart, read at once.
    gap = await _pace_relayed(_EngineStream(40, gap_s=0.03), read_pause_s=0.0)
    assert gap is not None and gap >= 0.025
