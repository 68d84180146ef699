"""What the gateway routes to: an endpoint by name, reached through some transport."""

from __future__ import annotations

from collections import deque
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
    """An endpoint's engines, as the gateway sees them; `bound` counts this gateway
    replica's requests in flight to them."""

    name: str
    bound: InFlightBound

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


class StandingDelay:
    """CoDel's sign of a standing queue (Nichols and Jacobson, "Controlling Queue Delay",
    2012), read on the time to first token: the shortest TTFT among the requests whose first
    token came within the last `interval_s`. After a burst some requests are served fast
    again; a queue that does not drain leaves none fast. None: no first token lately."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._seen: deque[tuple[float, float]] = deque()

    def observe(self, now: float, ttft_s: float) -> None:
        self._seen.append((now, ttft_s))

    def shortest(self, now: float) -> float | None:
        while self._seen and self._seen[0][0] < now - self.interval_s:
            self._seen.popleft()
        return min((ttft for _, ttft in self._seen), default=None)


def waits_too_long(in_flight: int, slots: int | None, shortest_ttft_s: float | None,
                   ttft_target_s: float, share: float) -> bool:
    """Whether a new request would wait in a standing queue past `share` of its tenant's
    TTFT target: the engines' slots are all taken and even the fastest recent first token
    came later than that. E.g. 16 slots, 30 in flight, fastest TTFT of the last second
    1.4 s, target 2 s, share 0.5: 1.4 > 1.0, refused. Below the slots, or with no recent
    first token, never: a long prompt's prefill alone is not a queue."""
    return (slots is not None and in_flight >= slots and shortest_ttft_s is not None
            and shortest_ttft_s > share * ttft_target_s)


class InFlightBound:
    """How many requests one gateway replica has in flight to an endpoint: beyond `limit` a
    request is refused at once (EndpointOverloaded) instead of queued. None: no bound.
    `slots` of them the endpoint's engines run at once; the rest queue, and `delay` tells
    whether that queue stands (see waits_too_long).

    Counted here, exactly, rather than left to vLLM (which queues without limit) or to Ray
    Serve's max_queued_requests, which counts a request as queued until its router has
    placed it: a burst of simultaneous requests is refused there below the endpoint's
    capacity."""

    def __init__(self, limit: int | None, slots: int | None = None) -> None:
        self.limit = limit
        self.slots = slots
        self.in_flight = 0
        self.delay = StandingDelay()

    def try_acquire(self) -> bool:
        if self.limit is not None and self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight -= 1

    def take(self, endpoint: str) -> Slot:
        """A slot for one request, or EndpointOverloaded when the bound is reached."""
        if not self.try_acquire():
            raise EndpointOverloaded(f"endpoint `{endpoint}` is {self._full()}")
        return Slot(self)

    def _full(self) -> str:
        return f"at capacity ({self.limit} requests in flight)"

    def why_refused(self, now: float, ttft_target_s: float, share: float) -> str | None:
        """Why a request arriving now would be refused (the bound is reached, or it would
        wait in a standing queue past `share` of its TTFT target), or None."""
        if self.limit is not None and self.in_flight >= self.limit:
            return self._full()
        if waits_too_long(self.in_flight, self.slots, self.delay.shortest(now), ttft_target_s,
                          share):
            return (f"its queue stands longer than {share:g} of your TTFT target "
                    f"({ttft_target_s:g} s)")
        return None


class Slot:
    """One request's place in an InFlightBound, given back once however the request ends:
    answered, its stream read or cancelled, or its call collected unread."""

    def __init__(self, bound: InFlightBound) -> None:
        self._bound: InFlightBound | None = bound

    def release(self) -> None:
        if self._bound is not None:
            self._bound.release()
            self._bound = None
