"""An endpoint whose engine lives in the gateway's own process: no hop on the token path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from serving.engine.host import EngineHost
from serving.gateway.routing import InFlightBound, Slot


class LocalCall:
    def __init__(self, host: EngineHost, kind: str, body: dict[str, Any], request_id: str,
                 bound: InFlightBound, endpoint: str) -> None:
        self._host, self._kind, self._body, self._request_id = host, kind, body, request_id
        self._bound, self._endpoint = bound, endpoint
        self._slot: Slot | None = None
        self._stream: AsyncIterator[str] | None = None

    def _release(self) -> None:
        if self._slot is not None:
            self._slot.release()

    async def head(self) -> dict[str, Any]:
        self._slot = self._bound.take(self._endpoint)
        try:
            reply = await self._host.handle(self._kind, self._body, self._request_id)
        except BaseException:
            self._release()
            raise
        if reply.stream is None:
            self._release()
            return {"status": reply.status, "body": reply.body}
        self._stream = reply.stream
        return {"status": reply.status, "stream": True}

    async def chunks(self) -> AsyncIterator[str]:
        assert self._stream is not None
        try:
            async for chunk in self._stream:
                yield chunk
        finally:
            self._release()

    def cancel(self) -> None:
        self._release()
        # Closing vLLM's generator raises GeneratorExit inside it, which aborts the request.
        if self._stream is not None and hasattr(self._stream, "aclose"):
            stream, self._stream = self._stream, None
            asyncio.ensure_future(stream.aclose())

    def __del__(self) -> None:
        # A streamed response whose body was never sent (the client left first) is neither
        # read to its end nor cancelled: its slot is given back when the call is collected.
        self._release()


class LocalTarget:
    def __init__(self, name: str, host: EngineHost, max_in_flight: int | None = None,
                 slots: int | None = None) -> None:
        self.name = name
        self.host = host
        self.bound = InFlightBound(max_in_flight, slots)

    def call(self, kind: str, body: dict[str, Any], request_id: str) -> LocalCall:
        return LocalCall(self.host, kind, body, request_id, self.bound, self.name)

    async def ready(self) -> bool:
        await self.host.check_health()
        return True

    async def card(self) -> dict[str, Any]:
        return {"root": self.host.args.model, "max_model_len": self.host.max_model_len}
