"""The live controller over endpoints created through the admin API: it reads them from the
platform store (a real SQLite file) before each decision, starts each new one from the
replicas it was deployed with, scales it in its own Serve application, and forgets it once
deleted. Ray Serve is stood in for."""

from __future__ import annotations

import time

import pytest

from autoscaling.live.controller import PartitionController
from autoscaling.live.window import GatewaySample
from deployments.partition_source import StorePartition
from serving.tenancy import Store, upgrade

ENGINE = {"max_model_len": 512}
PARTITION = {"accelerator": "cpu", "count": 2, "autoscaler": {"tuning": {
    "upscale_window_s": 0, "downscale_window_s": 0, "hold_after_growth_s": 0}}}
CONFIGURED = [{"name": "fixed", "model": "builtin:demo", "replicas": 1, "engine": ENGINE}]


class FakeServe:
    """Ray Serve as the controller sees it: running replicas, and the targets it was sent
    (as application, deployment)."""

    def __init__(self) -> None:
        self.running: dict[str, int] = {}
        self.scaled: list[tuple[tuple[str, str], int]] = []
        self.deployments: dict[str, tuple[str, str]] = {}

    async def running_replicas(self) -> dict[str, int]:
        return {e: self.running.get(e, 0) for e in self.deployments}

    async def scale(self, endpoint: str, replicas: int) -> None:
        self.scaled.append((self.deployments[endpoint], replicas))


@pytest.fixture
def store(tmp_path):
    url = f"sqlite:///{tmp_path}/aifactory.db"
    upgrade(url)
    made = Store(url)
    yield made
    made.close()


@pytest.fixture
async def controller(store):
    url = str(store.engine.url)
    made = PartitionController.__new__(PartitionController)
    # The config autoscales nothing; a long period: only the test's own steps decide.
    await made.__init__(None, "aifactory", {}, {}, url, period_s=3600.0,
                        partition_source=StorePartition(PARTITION, CONFIGURED, "aifactory",
                                                        "aifactory-endpoints", url))
    made.serve = FakeServe()
    yield made
    made._loop.cancel()


def create(store: Store, name: str, replicas: int, **autoscaling) -> None:
    store.create_endpoint(name, deployment={
        "model": "builtin:demo", "replicas": replicas, "engine": ENGINE,
        "autoscaling": {"max_replicas": 2, **autoscaling}})


async def test_a_created_endpoint_is_decided_from_the_replicas_it_was_deployed_with(
        controller, store):
    assert await controller.step() is None  # nothing autoscaled yet: nothing decided
    create(store, "popup", replicas=1, idle_to_zero_s=None)
    result = await controller.step()
    # Its first replica is loading (none running): it is kept, not taken for idle.
    assert result.decisions["popup"].target == 1
    assert controller.serve.scaled == []  # Serve already has that target
    assert controller.partition.capacity == 1  # 2 slots less the fixed endpoint's one


async def test_it_borrows_in_its_own_application_and_is_forgotten_once_deleted(
        controller, store):
    create(store, "popup", replicas=0)
    await controller.step()
    # Created at zero, deployed with one (Serve takes no 0): taken back at once.
    assert controller.serve.scaled == [(("aifactory-endpoints", "engine-popup"), 0)]
    # A request held at the gateway (as `wake` records it, without waking the loop, which
    # would decide beside the test's own steps).
    controller.window.add_gateway("popup", "gw", time.time(), GatewaySample(0, 3))
    result = await controller.step()
    assert result.decisions["popup"].target == 1  # no guarantee: it borrows the idle slot
    assert controller.serve.scaled[1:] == [(("aifactory-endpoints", "engine-popup"), 1)]
    view = controller.last.decisions
    assert [(d["endpoint"], d["guaranteed"], d["target"]) for d in view] == [("popup", 0, 1)]

    store.delete_endpoint("popup")
    assert await controller.step() is None
    assert controller.last.decisions == []  # the admin API shows no stale decision
    create(store, "popup", replicas=0)  # the same name again starts afresh
    assert (await controller.step()).decisions["popup"].previous == 0


async def test_a_changed_guarantee_is_decided_at_the_next_step(controller, store):
    create(store, "popup", replicas=0)
    assert (await controller.step()).decisions["popup"].target == 0
    deployment = store.get_endpoint("popup").deployment
    deployment["autoscaling"].update(guaranteed_replicas=1, min_replicas=1)
    store.set_endpoint_deployment("popup", deployment)
    result = await controller.step()
    assert result.decisions["popup"].target == 1  # its floor, now guaranteed
    assert controller.last.decisions[0]["guaranteed"] == 1


async def test_the_store_away_keeps_the_last_view(controller, store):
    create(store, "popup", replicas=1)
    await controller.step()
    controller.partition_source = lambda: (_ for _ in ()).throw(OSError("store away"))
    result = await controller.step()
    assert list(result.decisions) == ["popup"]
