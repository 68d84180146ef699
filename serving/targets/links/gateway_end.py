"""A gateway replica's end of its link to one engine replica: it sends requests, feeds each
reply to its stream, pings, and breaks every stream of a link that breaks or falls silent."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import deque
from typing import Any

from serving.targets.links import frames
from serving.targets.links.frames import (
    CANCEL,
    DRAINING,
    END,
    EVENT,
    HANDSHAKE_TIMEOUT_S,
    MAC_BYTES,
    MAGIC,
    NONCE_BYTES,
    PING,
    REFUSED,
    REPLY,
    REQUEST,
    LinkBroken,
    _Framed,
    _mac,
)

logger = logging.getLogger(__name__)

_ENDED = object()


class LinkStream:
    """One request's reply as it arrives over a link: `first()` gives the engine's JSON
    reply (dict) or the first SSE event (str); iterating gives the events until the end. A
    broken stream raises LinkBroken."""

    __slots__ = ("id", "_link", "_items", "_waiter", "_reply", "received", "_closed")

    def __init__(self, stream_id: int, link: GatewayLink) -> None:
        self.id = stream_id
        self._link = link
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future | None = None
        self._reply: dict[str, Any] | None = None
        self.received = 0
        self._closed = False

    def _put(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def feed(self, kind: int, payload: bytes) -> None:
        if kind == EVENT:
            self.received += 1
            self._put(payload.decode("utf-8", "replace"))
        elif kind == END:
            self._put(_ENDED)
        elif kind == REPLY:
            self.received += 1
            self._reply = json.loads(payload)
            self._put(_ENDED)
        else:  # FAIL, REFUSED
            self._put(LinkBroken(payload.decode("utf-8", "replace") or "the engine failed",
                                 resendable=kind == REFUSED and self.received == 0))

    def broken(self, why: str) -> None:
        self._put(LinkBroken(why, resendable=self.received == 0))

    async def _next(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    async def first(self) -> str | dict[str, Any]:
        item = await self._next()
        if item is _ENDED:
            if self._reply is not None:
                return self._reply
            raise LinkBroken("the engine ended the stream before its first event")
        if isinstance(item, BaseException):
            raise item
        return item

    def __aiter__(self) -> LinkStream:
        return self

    async def __anext__(self) -> str:
        item = await self._next()
        if item is _ENDED:
            self._closed = True
            self._link._streams.pop(self.id, None)
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> None:
        """The gateway no longer wants it: the engine aborts it, later frames are dropped."""
        if self._closed:
            return
        self._closed = True
        if self._link._streams.pop(self.id, None) is not None and not self._link.closed:
            self._link.send(CANCEL, self.id)


class GatewayLink(_Framed):
    """A gateway replica's link to one engine replica: sends requests, feeds replies to
    their streams, and breaks them all if the link breaks or falls silent."""

    def __init__(self, secret: bytes, replica: str) -> None:
        super().__init__(secret)
        self.replica = replica
        self._streams: dict[int, LinkStream] = {}
        self._next_id = 0
        self.draining = False
        self._pinger: asyncio.TimerHandle | None = None

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def usable(self) -> bool:
        return self.ready.done() and self.ready.exception() is None and not (
            self.closed or self.draining)

    def _handshake(self, buffer: bytearray) -> bool:
        if not hasattr(self, "_proved"):
            if len(buffer) < len(MAGIC) + NONCE_BYTES:
                return False
            if bytes(buffer[:len(MAGIC)]) != MAGIC:
                self._refuse("the peer does not speak the engine link protocol")
                return False
            theirs = bytes(buffer[len(MAGIC):len(MAGIC) + NONCE_BYTES])
            del buffer[:len(MAGIC) + NONCE_BYTES]
            self.transport.write(_mac(self._secret, b"gateway", theirs) + self._nonce)
            self._proved = True
        if len(buffer) < MAC_BYTES:
            return False
        mac = bytes(buffer[:MAC_BYTES])
        del buffer[:MAC_BYTES]
        if not hmac.compare_digest(mac, _mac(self._secret, b"engine", self._nonce)):
            self._refuse("the engine's proof does not match the link secret")
            return False
        self.ready.set_result(None)
        self._pinger = asyncio.get_running_loop().call_later(frames.PING_PERIOD_S, self._ping)
        return True

    def _ping(self) -> None:
        if self.closed:
            return
        if time.monotonic() - self.last_received > frames.LINK_TIMEOUT_S:
            logger.warning("engine link to %s silent for %.0f s; giving it up", self.replica,
                           frames.LINK_TIMEOUT_S)
            self.transport.abort()
            return
        self.send(PING, 0)
        self._pinger = asyncio.get_running_loop().call_later(frames.PING_PERIOD_S, self._ping)

    def request(self, kind: str, body: dict[str, Any], request_id: str) -> LinkStream:
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF or 1
        stream = LinkStream(self._next_id, self)
        self._streams[stream.id] = stream
        self.send(REQUEST, stream.id, json.dumps(
            {"kind": kind, "body": body, "request_id": request_id},
            separators=(",", ":")).encode())
        return stream

    def on_frame(self, kind: int, stream: int, payload: bytes) -> None:
        if stream == 0:
            if kind == DRAINING:
                self.draining = True
            return
        target = self._streams.get(stream)
        if target is None:
            return  # cancelled here already
        if kind != EVENT:
            del self._streams[stream]
        target.feed(kind, payload)

    def lost(self, exc: Exception | None) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream.broken(f"the link to engine replica {self.replica} broke")


async def connect(address: tuple[str, int], secret: bytes, replica: str) -> GatewayLink:
    """A gateway's authenticated link to the engine replica at `address`."""
    loop = asyncio.get_running_loop()
    _, link = await asyncio.wait_for(
        loop.create_connection(lambda: GatewayLink(secret, replica), *address),
        HANDSHAKE_TIMEOUT_S)
    try:
        await asyncio.wait_for(asyncio.shield(link.ready), HANDSHAKE_TIMEOUT_S)
    except BaseException:
        link.transport.abort()
        raise
    return link

