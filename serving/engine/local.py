"""An endpoint whose engine lives in the gateway's own process: no hop on the token path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from serving.engine.host import EngineHost


class LocalCall:
    def __init__(self, host: EngineHost, kind: str, body: dict[str, Any], request_id: str) -> None:
        self._host, self._kind, self._body, self._request_id = host, kind, body, request_id
        self._stream: AsyncIterator[str] | None = None

    async def head(self) -> dict[str, Any]:
        reply = await self._host.handle(self._kind, self._body, self._request_id)
        if reply.stream is None:
            return {"status": reply.status, "body": reply.body}
        self._stream = reply.stream
        return {"status": reply.status, "stream": True}

    async def chunks(self) -> AsyncIterator[str]:
        assert self._stream is not None
        async for chunk in self._stream:
            yield chunk

    def cancel(self) -> None:
        # Closing vLLM's generator raises GeneratorExit inside it, which aborts the request.
        if self._stream is not None and hasattr(self._stream, "aclose"):
            stream, self._stream = self._stream, None
            asyncio.ensure_future(stream.aclose())


class LocalTarget:
    def __init__(self, name: str, host: EngineHost) -> None:
        self.name = name
        self.host = host

    def call(self, kind: str, body: dict[str, Any], request_id: str) -> LocalCall:
        return LocalCall(self.host, kind, body, request_id)

    async def ready(self) -> bool:
        await self.host.check_health()
        return True

    async def card(self) -> dict[str, Any]:
        return {"root": self.host.args.model, "max_model_len": self.host.max_model_len}
