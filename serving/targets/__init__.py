"""Endpoint targets: how the gateway reaches an endpoint's engines. One interface, one module
per kind: an engine in the gateway's own process (`local`), an engine deployment reached over
engine links (`deployment`), and the waker that holds requests for an endpoint at zero
replicas (`waker`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from serving.targets.bound import InFlightBound
from serving.targets.errors import EndpointOverloaded, EndpointUnavailable


class EngineCall(Protocol):
    """One request on its way to an engine. `head()` sends it (once a slot is free) and
    says how it went so far: `{"status", "body"}` for a JSON reply, or `{"status": 200,
    "stream": True, "first": <first SSE event>}`; `chunks()` then yields the remaining SSE
    events as the engine makes them. `cancel()` aborts it in the engine."""

    async def head(self) -> dict[str, Any]: ...

    def chunks(self) -> AsyncIterator[str]: ...

    def cancel(self) -> None: ...


class EndpointTarget(Protocol):
    """An endpoint's engines, as one gateway replica sees them; `bound` counts this gateway
    replica's requests in flight to them."""

    name: str
    bound: InFlightBound

    def call(self, kind: str, body: dict[str, Any], request_id: str) -> EngineCall: ...

    async def ready(self) -> bool: ...

    async def card(self) -> dict[str, Any]: ...


__all__ = ["EngineCall", "EndpointTarget", "EndpointOverloaded", "EndpointUnavailable",
           "InFlightBound"]
