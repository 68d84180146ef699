"""The gateway's endpoint targets over Ray Serve deployment handles, and, for autoscaled
endpoints, the gateway's side of the partition controller: arrival reports, and holding a
request for an endpoint at zero replicas until one is running (bounded, then 503)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from serving.gateway.routing import EndpointTarget, EndpointUnavailable, InFlightBound, Slot

logger = logging.getLogger(__name__)

REPORT_PERIOD_S = 1.0
WAKE_POLL_S = 0.5
# A request whose engine replica died before its first chunk is sent again for this long.
RESEND_WINDOW_S = 60.0
RESEND_PAUSE_S = 0.5


class EndpointWaker:
    """One per gateway replica. Counts arrivals per autoscaled endpoint and reports them to
    the partition controller each second; its answer says which endpoints have running
    replicas. A request for one without any is held: the controller is told at once (it
    decides then, not at its next period) and asked again every WAKE_POLL_S until a replica
    runs or `timeout_s` passes."""

    def __init__(self, controller: DeploymentHandle, gateway: str, timeout_s: float) -> None:
        self._controller = controller
        self._gateway = gateway
        self.timeout_s = timeout_s
        self._arrivals: Counter[str] = Counter()
        self._held: Counter[str] = Counter()
        self._running: dict[str, int] | None = None  # None until the controller answered
        self._task: asyncio.Task | None = None

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

    async def hold_until_running(self, endpoint: str) -> None:
        """Return once `endpoint` has a running replica; EndpointUnavailable after timeout_s.
        Without an answer from the controller yet, do not hold: Serve queues the request."""
        if self._running is None or self._running.get(endpoint, 0) > 0:
            return
        self._held[endpoint] += 1
        deadline = time.monotonic() + self.timeout_s
        try:
            while True:
                try:
                    running = await self._controller.wake.remote(
                        self._gateway, endpoint, self._held[endpoint])
                except Exception as exc:
                    logger.warning("autoscaler unreachable while waking %s: %r", endpoint, exc)
                    running = 0
                if running > 0:
                    self._running[endpoint] = running
                    return
                if time.monotonic() >= deadline:
                    raise EndpointUnavailable(
                        f"endpoint `{endpoint}` is starting from zero replicas and had none "
                        f"ready within {self.timeout_s:g}s; retry shortly",
                        retry_after_s=max(1, round(self.timeout_s / 4)))
                await asyncio.sleep(WAKE_POLL_S)
        finally:
            self._held[endpoint] -= 1


class HandleCall:
    """One request to an engine deployment, sent when `head()` is awaited, the endpoint's
    in-flight bound has room and one of its engines' slots is free (Slot.wait_turn). If the
    replica it went to dies before the first chunk (queued in its engine, say), nothing
    reached the client yet: the request is sent again, and Serve routes it to another
    replica or to the one replacing the dead one."""

    def __init__(self, send: Callable[[], DeploymentResponseGenerator], bound: InFlightBound,
                 endpoint: str, hold=None) -> None:
        self._send = send
        self._bound, self._endpoint = bound, endpoint
        self._slot: Slot | None = None
        self._gen: DeploymentResponseGenerator | None = None
        self._hold = hold
        self.resent = 0

    def _release(self) -> None:
        if self._slot is not None:
            self._slot.release()

    async def head(self) -> dict[str, Any]:
        self._slot = self._bound.take(self._endpoint)
        try:
            await self._slot.wait_turn()
            head = await self._first()
        except BaseException:
            self._release()
            raise
        if not head.get("stream"):
            self._release()
        return head

    async def _first(self) -> dict[str, Any]:
        if self._hold is not None:
            await self._hold()
        self._gen = self._send()
        deadline = time.monotonic() + RESEND_WINDOW_S
        while True:
            try:
                return await self._gen.__anext__()
            except RayActorError as exc:  # ActorDiedError, ActorUnavailableError
                # A node that died may still be listed for a while: keep resending, briefly.
                if time.monotonic() >= deadline:
                    raise
                self.resent += 1
                logger.warning("engine replica lost before the first chunk (%r); sending "
                               "again (%d)", exc, self.resent)
                await asyncio.sleep(RESEND_PAUSE_S)
                self._gen = self._send()

    async def chunks(self) -> AsyncIterator[str]:
        assert self._gen is not None
        try:
            async for chunk in self._gen:
                yield chunk
        finally:
            self._release()

    def cancel(self) -> None:
        self._release()
        if self._gen is not None:
            self._gen.cancel()

    def __del__(self) -> None:
        # A streamed response whose body was never sent (the client left first) is neither
        # read to its end nor cancelled: its slot is given back when the call is collected.
        self._release()


class HandleTarget:
    """An endpoint reached through its engine deployment's handle, with at most
    `max_in_flight` requests from this gateway replica at once (`slots` of them running).
    With a `waker` the endpoint is autoscaled and may be at zero: its `card` must then be
    given, since no engine may be there to ask."""

    def __init__(self, name: str, handle: DeploymentHandle, max_in_flight: int | None = None,
                 slots: int | None = None, *, waker: EndpointWaker | None = None,
                 card: dict[str, Any] | None = None) -> None:
        self.name = name
        self._stream = handle.options(stream=True)
        self._handle = handle
        self.bound = InFlightBound(max_in_flight, slots)
        self._waker = waker
        self._card = card

    def call(self, kind: str, body: dict[str, Any], request_id: str) -> HandleCall:
        hold = None
        if self._waker is not None:
            self._waker.arrived(self.name)
            hold = lambda: self._waker.hold_until_running(self.name)
        return HandleCall(lambda: self._stream.generate.remote(kind, body, request_id),
                          self.bound, self.name, hold)

    async def ready(self) -> bool:
        if self._waker is not None:
            # Autoscaled: it may be at zero by decision, and is ready when it can be woken.
            return await self._waker.controller_reachable()
        await self._handle.check_health.remote()
        return True

    async def card(self) -> dict[str, Any]:
        if self._card is None:
            self._card = await self._handle.card.remote()
        return self._card


class EndpointTargets(Mapping[str, EndpointTarget]):
    """A gateway replica's endpoints: those of the platform config, fixed for its life, and
    those created through the admin API, which come and go."""

    def __init__(self, configured: Mapping[str, EndpointTarget]) -> None:
        self._configured = dict(configured)
        self._created: dict[str, EndpointTarget] = {}

    def __getitem__(self, name: str) -> EndpointTarget:
        target = self._configured.get(name)
        return target if target is not None else self._created[name]

    def __iter__(self) -> Iterator[str]:
        yield from self._configured
        yield from (n for n in list(self._created) if n not in self._configured)

    def __len__(self) -> int:
        return len(self._configured) + len(self._created.keys() - self._configured.keys())

    def created(self) -> set[str]:
        return set(self._created)

    def add(self, name: str, target: EndpointTarget) -> None:
        self._created[name] = target

    def remove(self, name: str) -> None:
        self._created.pop(name, None)
