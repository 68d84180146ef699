"""An endpoint whose engines run in their own Ray Serve deployment, reached over engine links
(serving.targets.link): the gateway sends each request to the replica of the endpoint with
the fewest of its requests in flight, and holds the rest in its line until an engine slot is
free (Slot.wait_turn).

A request waits up to REPLICA_WAIT_S for a replica to link to (one starting, or replacing
one that died). A request whose replica died, or was shutting down, before any of its reply
arrived is sent again to another replica within the same wait; one that had started
streaming is not: its client already has part of an answer."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from serving.event_wait import wait_event
from serving.targets.bound import InFlightBound
from serving.targets.call import BoundCall
from serving.targets.errors import EndpointUnavailable
from serving.targets.links import GatewayLink, LinkBroken, LinkStream, connect
from serving.targets.links.directory import LinkAddress, LinkDirectory
from serving.tenancy.records import batch_of

logger = logging.getLogger(__name__)

# An engine loads its weights in seconds here and in minutes on a GPU node.
REPLICA_WAIT_S = 300.0


class ReplicaLinks:
    """A gateway replica's links to the replicas of one engine deployment, made as the
    directory lists them; a link that breaks is dropped, and made again if its replica is
    still listed."""

    def __init__(self, name: str, secret: bytes, wanted: Callable[[], None]) -> None:
        self.name = name
        self._secret = secret
        self._wanted = wanted
        self.links: dict[str, GatewayLink] = {}
        self._connecting: dict[str, asyncio.Task] = {}
        self._available = asyncio.Event()
        self._turn = itertools.count()

    def update(self, addresses: Iterable[LinkAddress]) -> None:
        for address in addresses:
            link = self.links.get(address.replica)
            if (link is None or link.closed) and address.replica not in self._connecting:
                self._connecting[address.replica] = asyncio.get_running_loop().create_task(
                    self._connect(address))

    async def _connect(self, address: LinkAddress) -> None:
        try:
            link = await connect((address.host, address.port), self._secret, address.replica)
        except Exception as exc:
            logger.warning("no link to %s replica %s at %s:%d: %r", self.name, address.replica,
                           address.host, address.port, exc)
            return
        finally:
            self._connecting.pop(address.replica, None)
        self.links[address.replica] = link
        self._available.set()

    def choose(self) -> GatewayLink | None:
        """The usable link with the fewest open streams (ties taken in turn)."""
        best, best_load = None, None
        links = list(self.links.items())
        start = next(self._turn) % len(links) if links else 0
        for replica, link in links[start:] + links[:start]:
            if link.closed:
                del self.links[replica]
                continue
            if not link.usable:
                continue
            if best_load is None or link.open_streams < best_load:
                best, best_load = link, link.open_streams
        return best

    @property
    def usable(self) -> int:
        return sum(1 for link in self.links.values() if link.usable)

    async def link(self, deadline: float) -> GatewayLink:
        """A usable link, waiting for one (the directory read again at once) until
        `deadline`; EndpointUnavailable after it."""
        while True:
            link = self.choose()
            if link is not None:
                return link
            self._wanted()
            self._available.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EndpointUnavailable(
                    f"endpoint `{self.name}` has no engine replica reachable; retry shortly")
            await wait_event(self._available, min(remaining, 1.0))

    def stop_linking(self) -> None:
        """No new links. Those open stay until their replica closes them once it has
        drained (Serve stops the replicas of a deleted endpoint): streams in flight end."""
        for task in self._connecting.values():
            task.cancel()


class LinkHub:
    """A gateway replica's links to every engine deployment it routes to, fed by one
    directory reader."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._pools: dict[tuple[str, str], ReplicaLinks] = {}
        self._directory: LinkDirectory | None = None

    def links_for(self, app: str, deployment: str, name: str) -> ReplicaLinks:
        pool = self._pools.get((app, deployment))
        if pool is None:
            if self._directory is None:
                self._directory = LinkDirectory(self._distribute)
                self._directory.start()
            pool = ReplicaLinks(name, self._secret, self._directory.wanted)
            self._pools[(app, deployment)] = pool
        return pool

    def forget(self, app: str, deployment: str) -> None:
        pool = self._pools.pop((app, deployment), None)
        if pool is not None:
            pool.stop_linking()

    def _distribute(self, addresses: list[LinkAddress]) -> None:
        grouped: dict[tuple[str, str], list[LinkAddress]] = {}
        for address in addresses:
            grouped.setdefault((address.app, address.deployment), []).append(address)
        for key, pool in self._pools.items():
            pool.update(grouped.get(key, ()))


class DeploymentCall(BoundCall):
    def __init__(self, links: ReplicaLinks, kind: str, body: dict[str, Any], request_id: str,
                 bound: InFlightBound, endpoint: str,
                 hold: Callable[[], Awaitable[None]] | None = None) -> None:
        super().__init__(bound, endpoint, wait_turn=True)
        self._links = links
        self._request = (kind, body, request_id)
        self._hold = hold
        self._stream: LinkStream | None = None
        self.resent = 0

    async def _send(self) -> dict[str, Any]:
        if self._hold is not None:
            await self._hold()
        deadline = time.monotonic() + REPLICA_WAIT_S
        while True:
            link = await self._links.link(deadline)
            self._stream = link.request(*self._request)
            try:
                first = await self._stream.first()
            except LinkBroken as exc:
                self._stream = None
                if not exc.resendable or time.monotonic() >= deadline:
                    raise
                self.resent += 1
                logger.warning("engine replica %s lost %s before its first chunk (%s); "
                               "sending it again (%d)", link.replica, self._request[2], exc,
                               self.resent)
                continue
            if isinstance(first, dict):
                self._stream = None
                return first
            return {"status": 200, "stream": True, "first": first}

    def _events(self) -> AsyncIterator[str]:
        assert self._stream is not None
        return self._stream

    def _abort(self) -> None:
        if self._stream is not None:
            self._stream.cancel()


class DeploymentTarget:
    """An endpoint's engine deployment, with at most `max_in_flight` requests from this
    gateway replica at once (`slots` of them running, `slots_per_replica` on each replica
    up). With a `waker` the endpoint is
    autoscaled and may be at zero: its `card` must then be given, since no engine may be
    there to ask. `handle` (the deployment's Serve handle) answers `card()` otherwise."""

    def __init__(self, name: str, links: ReplicaLinks, handle=None,
                 max_in_flight: int | None = None, slots: int | None = None,
                 slots_per_replica: int | None = None, *,
                 waker=None, card: dict[str, Any] | None = None) -> None:
        self.name = name
        self.links = links
        self._handle = handle
        # With `slots_per_replica`, a standing queue is judged against the replicas this
        # gateway has links to, not against all the endpoint may grow to.
        slots_up = (None if slots_per_replica is None
                    else lambda: slots_per_replica * links.usable)
        self.bound = InFlightBound(max_in_flight, slots, slots_up)
        self._waker = waker
        self._card = card

    @property
    def at_zero(self) -> bool:
        """Autoscaled and, as the controller last said, without a running replica."""
        return self._waker is not None and self._waker.at_zero(self.name)

    def call(self, kind: str, body: dict[str, Any], request_id: str) -> DeploymentCall:
        hold = None
        if self._waker is not None:
            # A batch line is no arrival: the controller reads the batch backlog from the
            # store and lends it only what interactive demand leaves.
            if batch_of(request_id) is None:
                self._waker.arrived(self.name)
            hold = lambda: self._waker.hold_until_running(self.name)  # noqa: E731
        return DeploymentCall(self.links, kind, body, request_id, self.bound, self.name, hold)

    async def ready(self) -> bool:
        if self._waker is not None:
            # Autoscaled: it may be at zero by decision, and is ready when it can be woken.
            return await self._waker.controller_reachable()
        return self.links.usable > 0

    async def card(self) -> dict[str, Any]:
        if self._card is None:
            self._card = await self._handle.card.remote()
        return self._card
