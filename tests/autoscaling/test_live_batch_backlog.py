"""The live controller reading the batch backlog from the platform store (a real SQLite file)
and lending it what the partition leaves; Ray Serve is stood in for."""

from __future__ import annotations

import asyncio

import pytest

from autoscaling.live.controller import PartitionController
from autoscaling.live.window import SignalWindow
from deployments.batch_backlog import StoreBatchBacklog
from serving.batch import batch_store
from serving.batch.batch_input import BatchLine
from serving.tenancy import Store, upgrade

SLO = {"ttft_p95_s": 1.0, "itl_p95_s": 0.05}
PARTITION = {
    "capacity": 2.0,
    "tuning": {"upscale_window_s": 10.0},
    "endpoints": [
        {"name": "chat", "replica_cost": 1.0, "max_replicas": 2, "guaranteed_replicas": 1,
         "priority": 1, "slo": SLO, "target_ongoing_per_replica": 10.0},
        {"name": "bulk", "replica_cost": 1.0, "max_replicas": 2, "slo": SLO,
         "target_ongoing_per_replica": 10.0},
    ],
}


def test_the_window_reads_batch_lines_as_a_mean_like_the_engines_load():
    window = SignalWindow(window_s=10)
    assert window.signals("bulk", 1, now=100.0).batch_backlog is None  # never read: unknown
    window.add_batch("bulk", 100.0, queued=25, running=8)
    window.add_batch("bulk", 105.0, queued=20, running=4)
    signals = window.signals("bulk", 1, now=106.0)
    # backlog as last read: 20 + 4; running as the engines' load, a mean: (8 + 4) / 2
    assert (signals.batch_backlog, signals.batch_running) == (24, 6.0)
    # The batch ends: its lines still weigh in the engines' means for a window, so in the
    # running mean too; the backlog is gone at once.
    window.add_batch("bulk", 108.0, queued=0, running=0)
    signals = window.signals("bulk", 1, now=109.0)
    assert (signals.batch_backlog, signals.batch_running) == (0, 4.0)
    # A batch starts: its lines are sent (or held at a gateway) at once: the last read.
    window.add_batch("bulk", 110.0, queued=90, running=30)
    assert window.signals("bulk", 1, now=111.0).batch_running == 30
    # Not read for a window (the store away): unknown again.
    assert window.signals("bulk", 1, now=130.0).batch_running is None


class FakeServe:
    """Ray Serve as the controller sees it: running replicas, and the targets it was sent."""

    def __init__(self) -> None:
        self.running: dict[str, int] = {"chat": 0, "bulk": 0}
        self.scaled: list[tuple[str, int]] = []

    async def running_replicas(self) -> dict[str, int]:
        return dict(self.running)

    async def scale(self, endpoint: str, replicas: int) -> None:
        self.scaled.append((endpoint, replicas))


@pytest.fixture
def database_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path}/aifactory.db"
    upgrade(url)
    return url


@pytest.fixture
async def controller(database_url):
    made = PartitionController.__new__(PartitionController)
    # A long period: only the test's own steps decide (the loop would ask the real Serve).
    await made.__init__(PARTITION, "app", {"chat": "chat-engine", "bulk": "bulk-engine"},
                        {"chat": 0, "bulk": 0}, database_url, period_s=3600.0,
                        batch_backlog=StoreBatchBacklog(database_url))
    made.serve = FakeServe()
    yield made
    made._loop.cancel()
    await asyncio.gather(made._loop, return_exceptions=True)


def _submit(database_url: str, model: str, lines: int) -> None:
    store = Store(database_url)
    try:
        store.create_tenant("acme")
        batch_store.create(store, tenant="acme", key_prefix="afk_abcdefgh",
                           endpoint="/v1/completions", input_file_id="file-x", errors=[],
                           lines=[BatchLine(i, f"r{i}", {"model": model, "prompt": "p"})
                                  for i in range(1, lines + 1)])
    finally:
        store.close()


async def test_the_controller_lends_idle_capacity_to_the_backlog_in_the_store(
        controller, database_url):
    result = await controller.step()
    assert result.targets == {"chat": 0, "bulk": 0}  # no demand, no backlog
    assert controller.serve.scaled == []

    _submit(database_url, "bulk", 30)
    result = await controller.step()
    # Nothing runs bulk's lines: its first replica is lent at once.
    assert result.decisions["bulk"].lent == 1
    assert controller.serve.scaled == [("bulk", 1)]
    [view] = [d for d in controller.last.decisions if d["endpoint"] == "bulk"]
    assert view["lent_to_batch"] == 1 and view["reason"] == "batch_lent"
    assert (view["signals"]["batch_backlog"], view["signals"]["batch_running"]) == (30, 0)
    assert controller.state.endpoints["bulk"].batch_lent == 1


async def test_a_store_that_cannot_be_read_holds_what_is_lent(controller, database_url):
    _submit(database_url, "bulk", 30)
    await controller.step()

    def away() -> dict[str, tuple[int, int]]:
        raise ConnectionError("the store is away")

    controller.batch_backlog = away
    controller.window = SignalWindow(controller.window.window_s)  # no read within the window
    controller.serve.running = {"chat": 0, "bulk": 1}
    result = await controller.step()
    assert (result.targets["bulk"], result.decisions["bulk"].lent) == (1, 1)
    assert "batch backlog not observed; holding 1 lent" in result.decisions["bulk"].explanation


def test_the_backlog_source_travels_as_its_url(database_url):
    import pickle

    source = StoreBatchBacklog(database_url)
    assert source() == {}
    _submit(database_url, "chat", 2)
    copy = pickle.loads(pickle.dumps(source))  # as Ray sends it to the controller's actor
    assert copy._store is None and copy() == {"chat": (2, 0)}
