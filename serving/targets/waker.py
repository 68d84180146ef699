"""The gateway's side of the partition controller for autoscaled endpoints: arrival reports,
and holding a request for an endpoint at zero replicas until one is running (bounded, then
503 with Retry-After)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter

from serving.targets.errors import EndpointUnavailable

logger = logging.getLogger(__name__)

REPORT_PERIOD_S = 1.0
WAKE_POLL_S = 0.5


class EndpointWaker:
    """One per gateway replica. Counts arrivals per autoscaled endpoint and reports them to
    the partition controller each second; its answer says which endpoints have running
    replicas. A request for one without any is held: the controller is told at once (it
    decides then, not at its next period) and asked again every WAKE_POLL_S until a replica
    runs or `timeout_s` passes. The asking is one loop per endpoint, shared by every request
    held for it: a loop per request made two controller calls a second per held request
    (each also waking the controller's decision loop), so a wake holding hundreds of
    requests spent on calls the cores the starting replica needed."""

    def __init__(self, controller, gateway: str, timeout_s: float) -> None:
        """`controller`: the partition controller's Serve handle."""
        self._controller = controller
        self._gateway = gateway
        self.timeout_s = timeout_s
        self._arrivals: Counter[str] = Counter()
        self._held: Counter[str] = Counter()
        self._running: dict[str, int] | None = None  # None until the controller answered
        self._task: asyncio.Task | None = None
        self._wakes: dict[str, asyncio.Task] = {}  # endpoint -> the loop asking for it

    def arrived(self, endpoint: str) -> None:
        self._arrivals[endpoint] += 1
        self._start_reporting()

    def _start_reporting(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._report_forever())

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(REPORT_PERIOD_S)
            arrivals, self._arrivals = self._arrivals, Counter()
            report = {e: (arrivals[e], self._held[e]) for e in {*arrivals, *self._held}}
            try:
                self._running = await self._controller.report_gateway.remote(
                    self._gateway, report)
            except Exception as exc:  # the controller restarts; requests go on meanwhile
                logger.warning("autoscaler unreachable: %r", exc)

    async def controller_reachable(self) -> bool:
        """Asked by readiness checks; also starts the reports, so what the gateway knows of
        running replicas is at most a report period old from then on."""
        self._running = await self._controller.report_gateway.remote(self._gateway, {})
        self._start_reporting()
        return True

    def at_zero(self, endpoint: str) -> bool:
        """Whether the controller last said `endpoint` runs no replica (False before it
        answered: then nothing is known)."""
        return self._running is not None and self._running.get(endpoint, 0) == 0

    async def hold_until_running(self, endpoint: str) -> None:
        """Return once `endpoint` has a running replica; EndpointUnavailable after timeout_s.
        Without an answer from the controller yet, do not hold: Serve queues the request."""
        if self._running is None or self._running.get(endpoint, 0) > 0:
            return
        self._held[endpoint] += 1
        deadline = time.monotonic() + self.timeout_s
        try:
            while self._running.get(endpoint, 0) <= 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise EndpointUnavailable(
                        f"endpoint `{endpoint}` is starting from zero replicas and had none "
                        f"ready within {self.timeout_s:g}s; retry shortly",
                        retry_after_s=max(1, round(self.timeout_s / 4)))
                # shield: one request giving up does not stop the others' wake loop.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._wake_loop(endpoint)), left)
        finally:
            self._held[endpoint] -= 1

    def _wake_loop(self, endpoint: str) -> asyncio.Task:
        """The endpoint's wake loop, started by the first request held for it."""
        loop = self._wakes.get(endpoint)
        if loop is None or loop.done():
            loop = asyncio.get_running_loop().create_task(self._wake(endpoint))
            self._wakes[endpoint] = loop
        return loop

    async def _wake(self, endpoint: str) -> None:
        """Tell the controller how many requests wait for `endpoint`, every WAKE_POLL_S,
        until it runs a replica or no request waits any more."""
        while self._held[endpoint] > 0:
            try:
                running = await self._controller.wake.remote(
                    self._gateway, endpoint, self._held[endpoint])
            except Exception as exc:
                logger.warning("autoscaler unreachable while waking %s: %r", endpoint, exc)
                running = 0
            if running > 0:
                self._running[endpoint] = running
                return
            await asyncio.sleep(WAKE_POLL_S)
