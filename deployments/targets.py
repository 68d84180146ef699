"""The gateway's endpoint targets over Ray Serve deployment handles."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator


class HandleCall:
    def __init__(self, gen: DeploymentResponseGenerator) -> None:
        self._gen = gen

    async def head(self) -> dict[str, Any]:
        return await self._gen.__anext__()

    async def chunks(self) -> AsyncIterator[str]:
        async for chunk in self._gen:
            yield chunk

    def cancel(self) -> None:
        self._gen.cancel()


class HandleTarget:
    """An endpoint reached through its engine deployment's handle."""

    def __init__(self, name: str, handle: DeploymentHandle) -> None:
        self.name = name
        self._stream = handle.options(stream=True)
        self._handle = handle
        self._card: dict[str, Any] | None = None

    def call(self, kind: str, body: dict[str, Any], request_id: str) -> HandleCall:
        return HandleCall(self._stream.generate.remote(kind, body, request_id))

    async def ready(self) -> bool:
        await self._handle.check_health.remote()
        return True

    async def card(self) -> dict[str, Any]:
        if self._card is None:
            self._card = await self._handle.card.remote()
        return self._card
