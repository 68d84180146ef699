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


class EndpointUnavailable(Exception):
    """An endpoint cannot take the request now (e.g. no replica woke in time); the client
    should retry after `retry_after_s`. The gateway answers 503 with Retry-After."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EndpointOverloaded(Exception):
    """An endpoint's bounded queue is full: the request is refused at once rather than held
    until its client times out. The gateway answers 503 with Retry-After."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
