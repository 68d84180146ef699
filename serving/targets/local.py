"""An endpoint whose engine lives in the gateway's own process: no hop on the token path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from serving.engine.host import EngineHost
from serving.targets.bound import InFlightBound
from serving.targets.call import BoundCall


class LocalCall(BoundCall):
    """vLLM queues the request itself: no turn to wait for here."""

    def __init__(self, host: EngineHost, kind: str, body: dict[str, Any], request_id: str,
                 bound: InFlightBound, endpoint: str) -> None:
        super().__init__(bound, endpoint, wait_turn=False)
        self._host, self._kind, self._body, self._request_id = host, kind, body, request_id
        self._stream: AsyncIterator[str] | None = None

    async def _send(self) -> dict[str, Any]:
        reply = await self._host.handle(self._kind, self._body, self._request_id)
        if reply.stream is None:
            return {"status": reply.status, "body": reply.body}
        self._stream = reply.stream
        return {"status": reply.status, "stream": True}

    def _events(self) -> AsyncIterator[str]:
        assert self._stream is not None
        return self._stream

    def _abort(self) -> None:
        # Closing vLLM's generator raises GeneratorExit inside it, which aborts the request.
        if self._stream is not None and hasattr(self._stream, "aclose"):
            stream, self._stream = self._stream, None
            asyncio.ensure_future(stream.aclose())


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
        return self.host.card()
