"""An engine replica's end of its links: it listens, serves each authenticated gateway's
requests with its engine (EngineHost.handle), streams the replies back, aborts what a gateway
cancels or loses, and drains before it stops."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from serving.event_wait import wait_event
from serving.targets.links.frames import (
    CANCEL,
    DRAINING,
    END,
    EVENT,
    FAIL,
    MAC_BYTES,
    MAGIC,
    NONCE_BYTES,
    PING,
    PONG,
    REFUSED,
    REPLY,
    REQUEST,
    LinkBroken,
    _Framed,
    _mac,
)

logger = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any], str], Awaitable[Any]]


class _EngineEnd(_Framed):
    """A gateway's link, seen from the engine replica: requests in, replies out.

    Handshake: engine -> MAGIC + its nonce; gateway -> its MAC of that nonce + its own nonce;
    engine -> its MAC of the gateway's nonce."""

    def __init__(self, server: LinkServer) -> None:
        super().__init__(server.secret)
        self._server = server
        self._tasks: dict[int, asyncio.Task] = {}

    def _greet(self) -> None:
        self.transport.write(MAGIC + self._nonce)

    def _handshake(self, buffer: bytearray) -> bool:
        if len(buffer) < MAC_BYTES + NONCE_BYTES:
            return False
        mac, nonce = bytes(buffer[:MAC_BYTES]), bytes(buffer[MAC_BYTES:MAC_BYTES + NONCE_BYTES])
        del buffer[:MAC_BYTES + NONCE_BYTES]
        if not hmac.compare_digest(mac, _mac(self._secret, b"gateway", self._nonce)):
            self._refuse("the gateway's proof does not match the link secret")
            return False
        self.transport.write(_mac(self._secret, b"engine", nonce))
        self.ready.set_result(None)
        self._server._links.add(self)
        if self._server.draining:
            self.send(DRAINING, 0)
        return True

    def on_frame(self, kind: int, stream: int, payload: bytes) -> None:
        if kind == REQUEST:
            if stream in self._tasks:
                self.send(FAIL, stream, b"a stream id already in use")
                return
            if self._server.draining:
                self.send(REFUSED, stream, b"this engine replica is shutting down")
                return
            task = asyncio.get_running_loop().create_task(self._serve(stream, payload))
            self._tasks[stream] = task
            self._server.in_flight += 1
            task.add_done_callback(lambda _, s=stream: self._done(s))
        elif kind == CANCEL:
            task = self._tasks.get(stream)
            if task is not None:
                task.cancel()
        elif kind == PING:
            self.send(PONG, 0)

    def _done(self, stream: int) -> None:
        self._tasks.pop(stream, None)
        self._server.in_flight -= 1
        self._server._changed()

    async def _serve(self, stream: int, payload: bytes) -> None:
        try:
            request = json.loads(payload)
            reply = await self._server.handler(request["kind"], request["body"],
                                               request["request_id"])
        except asyncio.CancelledError:
            return
        except Exception as exc:  # a bug, not the client's error (vLLM answers those)
            logger.exception("engine link: request on stream %d failed", stream)
            self._try_send(FAIL, stream, f"the engine replica failed: {exc!r}".encode())
            return
        if reply.stream is None:
            self._try_send(REPLY, stream, json.dumps({"status": reply.status, "body": reply.body},
                                                     separators=(",", ":")).encode())
            return
        events = reply.stream
        try:
            async for event in events:
                self.send(EVENT, stream, event.encode())
            self.send(END, stream)
        except (asyncio.CancelledError, LinkBroken):
            pass  # the gateway cancelled, or the link broke: the engine request is aborted below
        except Exception as exc:  # the engine failed mid-stream: say so, in the stream
            logger.warning("engine link: stream %d broke: %r", stream, exc)
            self._try_send(FAIL, stream, f"the engine failed mid-stream: {exc}".encode())
        finally:
            # Closing vLLM's generator aborts the request in the engine if it is not done.
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    def _try_send(self, kind: int, stream: int, payload: bytes = b"") -> None:
        if not self.closed:
            self.send(kind, stream, payload)

    def lost(self, exc: Exception | None) -> None:
        self._server._links.discard(self)
        for task in list(self._tasks.values()):
            task.cancel()


class LinkServer:
    """An engine replica's end: listens on `host`, serves each authenticated gateway's
    requests with `handler(kind, body, request_id)` (an EngineHost.handle), and drains."""

    def __init__(self, handler: Handler, secret: bytes, host: str) -> None:
        self.handler = handler
        self.secret = secret
        self.host = host
        self.address: tuple[str, int] | None = None
        self.in_flight = 0
        self.draining = False
        self._links: set[_EngineEnd] = set()
        self._server: asyncio.AbstractServer | None = None
        self._idle = asyncio.Event()

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _EngineEnd(self), self.host, 0)
        self.address = (self.host, self._server.sockets[0].getsockname()[1])
        return self.address

    def _changed(self) -> None:
        if self.in_flight == 0:
            self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Take no new requests (gateways are told), and wait up to `timeout_s` for those in
        flight to finish; True if they all did."""
        self.draining = True
        for link in list(self._links):
            if not link.closed:
                link.send(DRAINING, 0)
        if self.in_flight:
            self._idle.clear()
            if not await wait_event(self._idle, timeout_s):
                return False
        return True

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.close()


