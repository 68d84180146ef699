"""The live controller's pure and storage parts: the signal window, the engine load recorder,
the gateway's hold for an endpoint at zero, and the snapshot store on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from types import SimpleNamespace

import pytest

from autoscaling.live.persistence import Snapshot, SnapshotStore, upgrade
from autoscaling.live.window import GatewaySample, SignalWindow, percentile
from serving.engine.stats import EngineLoadRecorder, EngineSample
from tests.postgres_schemas import POSTGRES_URL, Postgres

# -- percentile and window ----------------------------------------------------------------


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([], 95, None),
    ([0.3], 95, 0.3),
    ([4, 1, 3, 2], 50, 2),  # rank ceil(0.5 * 4) = 2
    ([4, 1, 3, 2], 95, 4),  # rank ceil(0.95 * 4) = 4
    (list(range(1, 101)), 95, 95),
])
def test_percentile_is_nearest_rank(values, q, expected):
    assert percentile(values, q) == expected


def sample(running, waiting, kv=0.1, ttft=(), itl=()):
    return EngineSample(steps=10, running=running, waiting=waiting, kv_cache_usage=kv,
                        ttft_s=tuple(ttft), itl_s=tuple(itl))


def test_window_sums_replica_means_and_adds_held_requests():
    window = SignalWindow(window_s=10)
    # replica a: running 2 then 4 (mean 3); replica b: running 5, waiting 1.
    window.add_engine("e", "a", 100.0, sample(2, 0, kv=0.2, ttft=[0.1, 0.3]))
    window.add_engine("e", "a", 101.0, sample(4, 2, kv=0.4, itl=[0.01, 0.02]))
    window.add_engine("e", "b", 101.0, sample(5, 1, kv=0.5, ttft=[0.2]))
    window.add_gateway("e", "g1", 101.0, GatewaySample(arrivals=30, held=0))
    window.add_gateway("e", "g2", 101.5, GatewaySample(arrivals=20, held=2))

    signals = window.signals("e", ready_replicas=2, now=102.0)

    assert signals.running == 3 + 5
    assert signals.waiting == 1 + 1 + 2  # a's mean, b's, and two held at g2
    assert signals.kv_cache_usage == pytest.approx(0.5)  # the fuller replica: max(0.3, 0.5)
    assert signals.arrival_rate_rps == 50 / 10
    assert signals.ttft_p95_s == 0.3
    assert signals.itl_p95_s == 0.02
    assert signals.ready_replicas == 2


def test_window_forgets_old_reports():
    window = SignalWindow(window_s=5)
    window.add_engine("e", "a", 100.0, sample(8, 8))
    window.add_engine("e", "a", 104.0, sample(2, 0))
    assert window.signals("e", 1, now=106.0).running == 2  # the first report left at 101
    # A replica that stopped reporting drops out entirely; with one still ready, load is
    # unknown again (None): the policy holds instead of reading an idle endpoint.
    signals = window.signals("e", 1, now=120.0)
    assert signals.running is None and signals.waiting is None


def test_window_at_zero_replicas_knows_the_engines_are_idle():
    window = SignalWindow(window_s=5)
    window.add_gateway("e", "g", 10.0, GatewaySample(arrivals=1, held=1))
    signals = window.signals("e", ready_replicas=0, now=11.0)
    assert (signals.running, signals.waiting) == (0.0, 1.0)
    assert signals.ongoing == 1.0
    # Arrivals the gateway did not hold (it had not heard of zero yet) wait in the gateway for a replica to link to.
    window.add_gateway("e", "g", 10.5, GatewaySample(arrivals=2, held=0))
    assert window.signals("e", ready_replicas=0, now=11.0).waiting == 3.0
    # Nothing reported at all, zero replicas: known idle, not missing.
    quiet = window.signals("other", ready_replicas=0, now=11.0)
    assert (quiet.running, quiet.waiting, quiet.arrival_rate_rps) == (0.0, 0.0, None)


# -- engine load recorder -----------------------------------------------------------------


def test_recorder_means_over_steps_and_drains():
    recorder = EngineLoadRecorder()
    for running, waiting, kv in [(2, 0, 0.1), (4, 2, 0.3)]:
        recorder.record(
            SimpleNamespace(num_running_reqs=running, num_waiting_reqs=waiting,
                            kv_cache_usage=kv),
            SimpleNamespace(time_to_first_tokens_iter=[0.5], inter_token_latencies_iter=[0.01]))
    drained = recorder.drain()
    assert (drained.steps, drained.running, drained.waiting) == (2, 3.0, 1.0)
    assert drained.kv_cache_usage == pytest.approx(0.2)
    assert drained.ttft_s == (0.5, 0.5) and drained.itl_s == (0.01, 0.01)
    assert EngineSample.from_dict(drained.to_dict()) == drained
    # Nothing since: no step means nothing running or waiting.
    idle = recorder.drain()
    assert (idle.steps, idle.running, idle.waiting, idle.ttft_s) == (0, 0.0, 0.0, ())


# -- the gateway's hold ---------------------------------------------------------------------


class FakeController:
    """The controller's two gateway calls, answering from a script of running counts."""

    def __init__(self, running_after_wakes: int | None) -> None:
        self.wakes = 0
        self.running_after = running_after_wakes
        self.report_gateway = SimpleNamespace(remote=self._report)
        self.wake = SimpleNamespace(remote=self._wake)

    async def _report(self, gateway, report):
        return {"e": 0}

    async def _wake(self, gateway, endpoint, held):
        self.wakes += 1
        assert held == 1
        if self.running_after is not None and self.wakes >= self.running_after:
            return 1
        return 0


async def test_hold_returns_once_a_replica_runs(monkeypatch):
    from serving.targets import waker as targets
    from serving.targets.waker import EndpointWaker

    monkeypatch.setattr(targets, "WAKE_POLL_S", 0.01)
    controller = FakeController(running_after_wakes=3)
    waker = EndpointWaker(controller, "g", timeout_s=5)
    waker._running = {"e": 0}
    await waker.hold_until_running("e")
    assert controller.wakes == 3
    assert waker._held["e"] == 0


async def test_hold_gives_up_with_retry_after(monkeypatch):
    from serving.targets import waker as targets
    from serving.targets.waker import EndpointWaker
    from serving.targets.errors import EndpointUnavailable

    monkeypatch.setattr(targets, "WAKE_POLL_S", 0.01)
    waker = EndpointWaker(FakeController(running_after_wakes=None), "g", timeout_s=0.05)
    waker._running = {"e": 0}
    with pytest.raises(EndpointUnavailable) as raised:
        await waker.hold_until_running("e")
    assert raised.value.retry_after_s >= 1
    assert waker._held["e"] == 0


class CountingController(FakeController):
    """Counts wake calls and records the held counts they carried."""

    def __init__(self, running_after_wakes: int | None) -> None:
        super().__init__(running_after_wakes)
        self.held_seen: list[int] = []

    async def _wake(self, gateway, endpoint, held):
        self.wakes += 1
        self.held_seen.append(held)
        await asyncio.sleep(0)  # a remote call yields to the loop
        if self.running_after is not None and self.wakes >= self.running_after:
            return 1
        return 0


async def test_requests_held_together_share_one_wake_loop(monkeypatch):
    """200 requests held for one endpoint make one controller call per poll, carrying the
    200, not one each (which burned the host's cores while a replica started)."""
    from serving.targets import waker as targets
    from serving.targets.waker import EndpointWaker

    monkeypatch.setattr(targets, "WAKE_POLL_S", 0.01)
    controller = CountingController(running_after_wakes=5)
    waker = EndpointWaker(controller, "g", timeout_s=5)
    waker._running = {"e": 0}
    await asyncio.gather(*(waker.hold_until_running("e") for _ in range(200)))
    assert controller.wakes == 5
    assert controller.held_seen[0] == 200
    assert waker._held["e"] == 0


async def test_a_wake_loop_ends_when_no_request_waits_and_a_later_one_starts_another(
        monkeypatch):
    from serving.targets import waker as targets
    from serving.targets.errors import EndpointUnavailable
    from serving.targets.waker import EndpointWaker

    monkeypatch.setattr(targets, "WAKE_POLL_S", 0.01)
    controller = CountingController(running_after_wakes=None)
    waker = EndpointWaker(controller, "g", timeout_s=0.05)
    waker._running = {"e": 0}
    for outcome in await asyncio.gather(
            *(waker.hold_until_running("e") for _ in range(3)), return_exceptions=True):
        assert isinstance(outcome, EndpointUnavailable)
    await asyncio.sleep(0.05)
    assert waker._wakes["e"].done()  # nobody waits: the loop stopped asking
    asked = controller.wakes
    await asyncio.sleep(0.05)
    assert controller.wakes == asked
    controller.running_after = controller.wakes + 2
    await waker.hold_until_running("e")  # a new request, a new loop, and it runs
    assert waker._held["e"] == 0 and controller.wakes == asked + 2


async def test_no_hold_before_the_controller_answered():
    from serving.targets.waker import EndpointWaker

    controller = FakeController(running_after_wakes=None)
    waker = EndpointWaker(controller, "g", timeout_s=5)
    await waker.hold_until_running("e")  # unknown: Serve queues the request itself
    assert controller.wakes == 0


# -- snapshot store -------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/platform.db"
        return
    pg = Postgres(POSTGRES_URL, prefix="autoscaler")
    try:
        yield pg.new_schema()
    finally:
        pg.drop_all()


def test_snapshot_store_round_trip_and_action_log(database_url):
    upgrade(database_url)
    upgrade(database_url)  # a second `aifactory up` finds nothing to do
    store = SnapshotStore(database_url)
    try:
        assert store.load("default") is None
        first = Snapshot("default", 10.0, {"version": 1, "endpoints": {}},
                         [{"endpoint": "a", "target": 1}], 5.0, False)
        store.save(first, [{"at": 10.0, "endpoint": "a", "previous": 0, "target": 1,
                            "current": 0, "reason": "guarantee", "explanation": "owed 1"}])
        second = Snapshot("default", 11.0, {"version": 1, "endpoints": {"a": {"target": 2}}},
                          [{"endpoint": "a", "target": 2}], 5.0, True)
        store.save(second, [{"at": 11.0, "endpoint": "a", "previous": 1, "target": 2,
                             "current": 1, "reason": "lent", "explanation": "idle capacity"}])
        assert store.load("default") == second
        assert [a["reason"] for a in store.recent_actions("default")] == ["lent", "guarantee"]
        assert store.recent_actions("default", limit=1)[0]["target"] == 2
        assert store.load("other") is None
    finally:
        store.close()
