"""How full an endpoint is, as one gateway replica sees it: requests in flight, its line of
requests waiting for an engine slot, and whether that line stands too long to refuse a
newcomer (the pipeline's "refuse if full" step reads it; every target counts into it)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from serving.targets.errors import EndpointOverloaded


def spread_retry(retry_after_s: int, draw: float) -> dict[str, str]:
    """Retry-After for a refused request, and `retry-after-ms` (which the official openai
    client and this platform's SDK prefer) drawn from [retry_after_s, 2 * retry_after_s)
    by `draw` in [0, 1). Clients refused together otherwise come back together, and meet a
    full queue again: a one-second wave that gave the first of them long waits."""
    return {"retry-after": str(retry_after_s),
            "retry-after-ms": str(round(1000 * retry_after_s * (1 + draw)))}


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


@dataclass(frozen=True)
class QueueBudget:
    """How much of a tenant's TTFT target an endpoint's queue may take before new requests
    are refused. `line`: how long the first in the gateway's own line has waited; the rest
    of the target is left for the engine's first token and for the spread of waits (with
    0.5 of a 2 s target, a flood's served requests took 1.1 to 1.2 s to their first token
    at the median, and up to 8% missed the target). `first_token`: the fastest recent first
    token, for engines that queue themselves, where the gateway sees nothing else."""

    line: float = 0.25
    first_token: float = 0.5
    # `token_gap`: the mean gap between the tokens of the endpoint's streams lately, against
    # the tenant's ITL target, while the replicas up run at least `loaded` of their slots.
    # A newcomer's prefill and its place in the batch slow every running stream; past its
    # target an overloaded endpoint's streams all miss it (in the simulator an H100 endpoint
    # at twice its replicas' load served nothing within SLO: autoscaling/simulate/gateway.py).
    token_gap: float = 0.8
    loaded: float = 0.25


def waits_too_long(in_flight: int, slots: int | None, shortest_ttft_s: float | None,
                   oldest_wait_s: float, ttft_target_s: float, budget: QueueBudget) -> bool:
    """Whether a new request would wait in a standing queue past its share of its tenant's
    TTFT target. Either the first in the gateway's line has already waited longer than
    `budget.line` of it (first come, first served: a newcomer waits about as long), or, for
    engines that queue themselves, all their slots are taken and even the fastest recent
    first token came later than `budget.first_token` of it. E.g. target 2 s: the first in
    line waiting 0.6 s, refused; 16 slots, 30 in flight, fastest TTFT of the last second
    1.4 s, refused. Below the slots, or with no recent first token, the second never
    refuses: a long prompt's prefill alone is not a queue."""
    if oldest_wait_s > budget.line * ttft_target_s:
        return True
    return (slots is not None and in_flight >= slots and shortest_ttft_s is not None
            and shortest_ttft_s > budget.first_token * ttft_target_s)


def tokens_too_slow(in_flight: int, slots: int | None, mean_token_gap_s: float | None,
                    itl_target_s: float, budget: QueueBudget) -> bool:
    """Whether the endpoint's streams get their tokens too slowly to take a newcomer: the
    mean gap between their tokens lately exceeds `budget.token_gap` of the tenant's ITL
    target while the replicas up run at least `budget.loaded` of their slots. E.g. target
    0.2 s, 256 slots: 100 in flight at a mean gap of 0.17 s, refused; 40 in flight, not (a
    light load's slow tokens are the model's, and refusing would not speed them)."""
    return (slots is not None and mean_token_gap_s is not None
            and in_flight >= budget.loaded * slots
            and mean_token_gap_s > budget.token_gap * itl_target_s)


class TokenPace:
    """How fast an endpoint's streams get their tokens: the mean gap between consecutive
    tokens of a stream, over all its streams, in the last full interval of `interval_s`.
    Summed as they come (two numbers, nothing kept per token): the token path pays an
    addition. None: no interval with tokens ended within the last interval."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._began: float | None = None
        self._sum = 0.0
        self._count = 0
        self._last: tuple[float, float] | None = None  # (when it ended, its mean gap)

    def observe(self, now: float, gap_s: float) -> None:
        self._roll(now)
        self._sum += gap_s
        self._count += 1

    def mean_gap(self, now: float) -> float | None:
        self._roll(now)
        if self._last is None or now - self._last[0] > self.interval_s:
            return None
        return self._last[1]

    def _roll(self, now: float) -> None:
        if self._began is None:
            self._began = now
        elif now - self._began >= self.interval_s:
            if self._count:
                self._last = (self._began + self.interval_s, self._sum / self._count)
            self._began, self._sum, self._count = now, 0.0, 0


class InFlightBound:
    """How many requests one gateway replica has in flight to an endpoint: beyond `limit` a
    request is refused at once (EndpointOverloaded) instead of queued. None: no bound.
    `slots` of them the endpoint's engines run at once; the rest queue, and `delay` tells
    whether that queue stands (see waits_too_long). `slots_up`, where given, tells how many
    of the `slots` the engine replicas up now run: an autoscaled endpoint's `slots` are
    those of its max_replicas, and with fewer up the rest of its turns queue in the
    engines, where only its first tokens show it. A call that waits for its turn
    (Slot.wait_turn) queues here, first come first served, until one of the `slots` is free;
    `waiting` holds when each in line began to wait, oldest first.

    Counted here, exactly, rather than left to vLLM (which queues without limit) or to Ray
    Serve's max_queued_requests, which counts a request as queued until its router has
    placed it: a burst of simultaneous requests is refused there below the endpoint's
    capacity."""

    def __init__(self, limit: int | None, slots: int | None = None,
                 slots_up: Callable[[], int] | None = None) -> None:
        self.limit = limit
        self.slots = slots
        self._slots_up = slots_up
        self.in_flight = 0
        self.delay = StandingDelay()
        self.pace = TokenPace()
        self.turns = asyncio.Semaphore(slots) if slots is not None else None
        self.waiting: dict[Slot, float] = {}

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

    def running_slots(self) -> int | None:
        """Requests the engines up now run at once: the `slots`, or fewer while some of an
        autoscaled endpoint's replicas are not up (e.g. 256 a replica, 2 of 4 up: 512 of
        1,024). The standing-queue test reads these: turns beyond them wait in the engines'
        queues, unseen by the gateway's line."""
        if self.slots is None or self._slots_up is None:
            return self.slots
        return min(self.slots, self._slots_up())

    def oldest_wait(self, now: float) -> float:
        """How long the first in this gateway's queue has waited for its turn; 0: no queue."""
        return now - next(iter(self.waiting.values()), now)

    def why_refused(self, now: float, ttft_target_s: float, itl_target_s: float | None = None,
                    budget: QueueBudget = QueueBudget()) -> str | None:
        """Why a request arriving now would be refused (the bound is reached, it would wait
        in a standing queue past its `budget` of its TTFT target, or the streams running
        get their tokens slower than its budget of the ITL target), or None."""
        if self.limit is not None and self.in_flight >= self.limit:
            return self._full()
        slots = self.running_slots()
        if waits_too_long(self.in_flight, slots, self.delay.shortest(now),
                          self.oldest_wait(now), ttft_target_s, budget):
            return f"its queue stands too long for your TTFT target ({ttft_target_s:g} s)"
        if itl_target_s is not None and tokens_too_slow(
                self.in_flight, slots, self.pace.mean_gap(now), itl_target_s, budget):
            return ("its streams get their tokens too slowly for your inter-token latency "
                    f"target ({itl_target_s:g} s)")
        return None


class Slot:
    """One request's place in an InFlightBound, given back once however the request ends:
    answered, its stream read or cancelled, or its call collected unread."""

    def __init__(self, bound: InFlightBound) -> None:
        self._bound: InFlightBound | None = bound
        self._has_turn = False

    async def wait_turn(self) -> None:
        """Wait until fewer than the bound's `slots` requests are running, then count this
        one as running. Sent only then, a request never waits in Ray Serve's router, which
        retries a full replica with a backoff of up to 0.5 s and probes it meanwhile: the
        queue stays here, in order, where its length and wait are known."""
        bound = self._bound
        if bound is None or bound.turns is None:
            return
        bound.waiting[self] = time.monotonic()
        try:
            await bound.turns.acquire()
        finally:
            del bound.waiting[self]
        self._has_turn = True

    def release(self) -> None:
        if self._bound is not None:
            if self._has_turn:
                self._bound.turns.release()
                self._has_turn = False
            self._bound.release()
            self._bound = None
