"""The link's wire: a handshake in which each side proves it holds the platform's link secret
(HMAC-SHA256 over the other's fresh nonce), then frames of kind (1 byte), stream id (4 bytes,
chosen by the gateway per link), payload length (4 bytes) and payload, both ways. Frames one
side has ready in a turn of its event loop leave in one write."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import struct
import time

logger = logging.getLogger(__name__)

HEADER = struct.Struct("!BII")
# gateway -> engine
REQUEST, CANCEL, PING = 1, 2, 3
# engine -> gateway
REPLY, EVENT, END, FAIL, PONG, DRAINING, REFUSED = 11, 12, 13, 14, 15, 16, 17
KINDS = frozenset({REQUEST, CANCEL, PING, REPLY, EVENT, END, FAIL, PONG, DRAINING, REFUSED})

MAGIC = b"AFL1"
NONCE_BYTES = 32
MAC_BYTES = 32
# A request body is at most the gateway's body limit (8 MiB) plus what the gateway adds; an
# event is a few tokens, or a few thousand when a reader lagged and vLLM merged them.
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
# The gateway pings each link this often and gives it up after this long without a frame:
# a replica whose node vanished sends no FIN, and its streams must not hang.
PING_PERIOD_S = 1.0
LINK_TIMEOUT_S = 5.0
HANDSHAKE_TIMEOUT_S = 5.0


class LinkBroken(Exception):
    """A stream ended without its end: its link broke, its engine replica refused it
    (shutting down) or its engine said it failed. `resendable`: nothing of its reply had
    arrived and its engine did not fail it, so another replica may take it."""

    def __init__(self, message: str, resendable: bool = False) -> None:
        super().__init__(message)
        self.resendable = resendable


class LinkRefused(Exception):
    """The peer did not prove it holds the link secret, or spoke another protocol."""


def _mac(secret: bytes, role: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, role + nonce, hashlib.sha256).digest()


class _Framed(asyncio.Protocol):
    """Both ends: the handshake, then frames in (to `on_frame`) and frames out, those of one
    loop turn joined into one write."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.ready = asyncio.get_running_loop().create_future()
        self.last_received = time.monotonic()
        self._nonce = os.urandom(NONCE_BYTES)

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._greet()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(LinkRefused(f"the link closed during its handshake: {exc!r}"))
        self.lost(exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- frames ----------------------------------------------------------------------------

    def send(self, kind: int, stream: int, payload: bytes = b"") -> None:
        if self.closed:
            raise LinkBroken("the link is closed")
        self._out.append(HEADER.pack(kind, stream, len(payload)))
        if payload:
            self._out.append(payload)
        if not self._flush_scheduled:
            # Written once this loop turn's frames are all here: one write for the streams
            # of one engine step; the first frame never waits for a second.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if not self.closed and out:
            self.transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        buffer = self._buffer
        buffer += data
        if not self.ready.done():
            if not self._handshake(buffer):
                return
        offset, size, header = 0, len(buffer), HEADER.size
        while size - offset >= header:
            kind, stream, length = HEADER.unpack_from(buffer, offset)
            if length > MAX_PAYLOAD_BYTES or kind not in KINDS:
                logger.warning("engine link: a malformed frame; closing the link")
                self.transport.abort()
                return
            end = offset + header + length
            if end > size:
                break
            self.on_frame(kind, stream, bytes(buffer[offset + header:end]))
            offset = end
            if self.closed:
                return
        del buffer[:offset]

    # -- to override -----------------------------------------------------------------------

    def _greet(self) -> None: ...

    def _handshake(self, buffer: bytearray) -> bool:
        """Consume the handshake from `buffer`; True once it is done (frames may follow)."""
        raise NotImplementedError

    def on_frame(self, kind: int, stream: int, payload: bytes) -> None:
        raise NotImplementedError

    def lost(self, exc: Exception | None) -> None: ...

    def _refuse(self, why: str) -> None:
        logger.warning("engine link refused: %s (%s)", why,
                       self.transport.get_extra_info("peername"))
        self.ready.set_exception(LinkRefused(why))
        self.transport.abort()
