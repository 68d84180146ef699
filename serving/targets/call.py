"""What every engine call shares: its place in the endpoint's bound, taken when the call is
sent and given back exactly once however it ends (answered, its stream read or cancelled, or
the call collected unread)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from serving.targets.bound import InFlightBound, Slot


class BoundCall:
    """An EngineCall's shell: `head()` takes a slot (EndpointOverloaded when the bound is
    reached), waits for its turn when `wait_turn`, then runs `_send()`; a JSON reply gives the
    slot back at once, a stream when `chunks()` ends or `cancel()` is called. Subclasses
    implement `_send()`, `_events()` and `_abort()`."""

    def __init__(self, bound: InFlightBound, endpoint: str, wait_turn: bool) -> None:
        self._bound, self._endpoint, self._wait_turn = bound, endpoint, wait_turn
        self._slot: Slot | None = None

    def _release(self) -> None:
        if self._slot is not None:
            self._slot.release()

    async def head(self) -> dict[str, Any]:
        self._slot = self._bound.take(self._endpoint)
        try:
            if self._wait_turn:
                await self._slot.wait_turn()
            head = await self._send()
        except BaseException:
            self.cancel()
            raise
        if not head.get("stream"):
            self._release()
        return head

    async def chunks(self) -> AsyncIterator[str]:
        try:
            async for chunk in self._events():
                yield chunk
        finally:
            self._release()

    def cancel(self) -> None:
        self._release()
        self._abort()

    def __del__(self) -> None:
        # A streamed response whose body was never sent (the client left first) is neither
        # read to its end nor cancelled: its slot is given back when the call is collected.
        self._release()

    async def _send(self) -> dict[str, Any]:
        raise NotImplementedError

    def _events(self) -> AsyncIterator[str]:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError
