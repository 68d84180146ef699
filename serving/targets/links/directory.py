"""Where engine replicas' links listen. Each engine replica publishes its address under its
Serve application and deployment in Ray's GCS key-value store (where Serve keeps its own
state; on every Ray cluster, nothing else to run) and refreshes it; each gateway replica
reads the addresses of all engine replicas once a second and links to the new ones.

An entry not refreshed for STALE_S belongs to a replica that died without withdrawing it (its
process or node was killed): it is skipped, and removed once it is much older."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from serving.event_wait import wait_event

logger = logging.getLogger(__name__)

NAMESPACE = b"aifactory-links"
PUBLISH_PERIOD_S = 2.0
READ_PERIOD_S = 1.0
STALE_S = 10.0
FORGET_S = 300.0
KV_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class LinkAddress:
    app: str
    deployment: str
    replica: str
    host: str
    port: int
    published_at: float

    @property
    def key(self) -> bytes:
        return f"{self.app}/{self.deployment}/{self.replica}".encode()

    def to_json(self) -> bytes:
        return json.dumps({"host": self.host, "port": self.port,
                           "at": self.published_at}).encode()

    @classmethod
    def from_entry(cls, key: bytes, value: bytes) -> LinkAddress | None:
        try:
            app, deployment, replica = key.decode().split("/", 2)
            data = json.loads(value)
            return cls(app, deployment, replica, str(data["host"]), int(data["port"]),
                       float(data["at"]))
        except (ValueError, KeyError, TypeError):
            return None


def gcs_client():
    from ray.experimental.internal_kv import internal_kv_get_gcs_client

    client = internal_kv_get_gcs_client()
    if client is None:
        raise RuntimeError("not connected to Ray")
    return client


class LinkPublisher:
    """An engine replica's entry: published now, refreshed every PUBLISH_PERIOD_S until
    withdrawn."""

    def __init__(self, app: str, deployment: str, replica: str, host: str, port: int) -> None:
        self._entry = (app, deployment, replica, host, port)
        self._task: asyncio.Task | None = None

    def _address(self) -> LinkAddress:
        return LinkAddress(*self._entry, published_at=time.time())

    async def publish(self) -> None:
        address = self._address()
        await gcs_client().async_internal_kv_put(address.key, address.to_json(), True, NAMESPACE,
                                           timeout=KV_TIMEOUT_S)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_PERIOD_S)
            try:
                address = self._address()
                await gcs_client().async_internal_kv_put(address.key, address.to_json(), True,
                                                   NAMESPACE, timeout=KV_TIMEOUT_S)
            except Exception as exc:  # the GCS restarts; serving goes on meanwhile
                logger.warning("could not refresh this replica's link address: %r", exc)

    async def withdraw(self) -> None:
        if self._task is not None:
            self._task.cancel()
        try:
            await gcs_client().async_internal_kv_del(self._address().key, False, NAMESPACE,
                                               timeout=KV_TIMEOUT_S)
        except Exception as exc:
            logger.warning("could not withdraw this replica's link address: %r", exc)


class LinkDirectory:
    """A gateway replica's view of every engine replica's link address, read every
    READ_PERIOD_S (or at once when `wanted()`), handed to `on_read`."""

    def __init__(self, on_read: Callable[[list[LinkAddress]], None],
                 clock: Callable[[], float] = time.time) -> None:
        self._on_read = on_read
        self._clock = clock
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._read_forever())

    def wanted(self) -> None:
        """A request found no replica to send to: read again now, not at the next period."""
        self._wake.set()

    async def read(self) -> list[LinkAddress]:
        gcs = gcs_client()
        keys = await gcs.async_internal_kv_keys(b"", NAMESPACE, timeout=KV_TIMEOUT_S)
        entries = await gcs.async_internal_kv_multi_get(keys, NAMESPACE, timeout=KV_TIMEOUT_S)
        now = self._clock()
        fresh, forgotten = [], []
        for key, value in entries.items():
            address = LinkAddress.from_entry(key, value)
            if address is None or now - address.published_at > FORGET_S:
                forgotten.append(key)
            elif now - address.published_at <= STALE_S:
                fresh.append(address)
        for key in forgotten:
            await gcs.async_internal_kv_del(key, False, NAMESPACE, timeout=KV_TIMEOUT_S)
        return fresh

    async def _read_forever(self) -> None:
        while True:
            try:
                self._on_read(await self.read())
            except Exception as exc:  # the GCS restarts; links already made keep serving
                logger.warning("could not read the engine link directory: %r", exc)
            await wait_event(self._wake, READ_PERIOD_S)
            self._wake.clear()
