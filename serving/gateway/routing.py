"""What the gateway routes to: an endpoint by name, reached through some transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol


class EngineCall(Protocol):
    """One request in flight on an engine. `head()` says how it went so far (status and, for
    a finished or failed request, the body); `chunks()` then yields SSE events as the engine
    makes them."""

    async def head(self) -> dict[str, Any]: ...

    def chunks(self) -> AsyncIterator[str]: ...

    def cancel(self) -> None: ...


class EndpointTarget(Protocol):
    """An endpoint's engines, as the gateway sees them."""

    name: str

    def call(self, kind: str, body: dict[str, Any], request_id: str) -> EngineCall: ...

    async def ready(self) -> bool: ...

    async def card(self) -> dict[str, Any]: ...
