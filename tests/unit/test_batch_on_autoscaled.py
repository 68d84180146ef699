"""Batch lines on an autoscaled endpoint are no interactive demand: they are not reported to
the partition controller as arrivals (it reads the batch backlog from the store and lends it
only what interactive demand leaves), and none is sent to an endpoint the controller keeps
at zero (its lines wait until it lends the backlog a replica)."""

from __future__ import annotations

from types import SimpleNamespace

from serving.gateway.batch_line import GatewayLines
from serving.targets.deployment import DeploymentTarget
from serving.targets.waker import EndpointWaker
from serving.tenancy.records import batch_line_request_id

LINE_ID = batch_line_request_id("batch_" + "a" * 32, 7)


class Controller:
    """The partition controller's handle, never called here."""


async def test_a_batch_line_is_no_arrival_but_a_request_is() -> None:
    waker = EndpointWaker(Controller(), "g", timeout_s=5)
    waker._start_reporting = lambda: None  # no report loop in this test
    target = DeploymentTarget("burst", links=None, waker=waker, max_in_flight=8, slots=4)
    target.call("chat", {"model": "burst"}, LINE_ID)
    target.call("chat", {"model": "burst"}, "0" * 32)
    target.call("chat", {"model": "burst"}, LINE_ID.replace("-7", "-8"))
    assert waker._arrivals == {"burst": 1}


def test_no_line_goes_to_an_endpoint_the_controller_keeps_at_zero() -> None:
    waker = EndpointWaker(Controller(), "g", timeout_s=5)
    target = DeploymentTarget("burst", links=None, waker=waker, max_in_flight=8, slots=8)
    lines = GatewayLines(SimpleNamespace(endpoints={"burst": target}))
    assert not target.at_zero and lines.room("burst") > 0  # nothing known yet: Serve queues
    waker._running = {"burst": 0}
    assert target.at_zero and lines.room("burst") == 0
    waker._running = {"burst": 1}
    assert not target.at_zero and lines.room("burst") == 8 - 2  # a quarter kept free


def test_lines_fill_the_replicas_up_not_those_the_endpoint_may_grow_to() -> None:
    """burst may grow to 4 replicas of 8 slots (32) and has 1 up: its lines take 6 of that
    one's 8, not 24 that would queue in its engine and make the gateway's standing-queue
    test refuse interactive requests (serving/targets/bound.py)."""
    waker = EndpointWaker(Controller(), "g", timeout_s=5)
    waker._running = {"burst": 1}
    links = SimpleNamespace(usable=1)
    target = DeploymentTarget("burst", links=links, waker=waker, max_in_flight=64, slots=32,
                              slots_per_replica=8)
    lines = GatewayLines(SimpleNamespace(endpoints={"burst": target}))
    assert lines.room("burst") == 8 - 2
    links.usable = 3
    assert lines.room("burst") == 24 - 6
