"""How many batch lines one gateway replica may send to an endpoint now, a pure function of
what its in-flight bound shows. Batch work takes only what interactive traffic leaves: no new
line while any request waits for an engine slot (an interactive request is never queued
behind batch lines), and a reserve of slots stays free for interactive arrivals, so a
returning tenant finds room at once while the lines already running finish.

Free slots are not the whole cost: every line in an engine's running batch lengthens each
engine step, and so every interactive request's time to first token (with up to 192 lines
beside it the demo engine's TTFT p95 grew more than tenfold, see
benchmarks/batch_beside_interactive.py). So while interactive requests use the endpoint (in
flight now, or within the last few seconds) the batch keeps to one line; it fills the
endpoint again once they have gone quiet."""

from __future__ import annotations

from dataclasses import dataclass

# Where an endpoint's engines run no bounded number of requests at once (slots unknown), a
# gateway replica sends at most this many batch lines to it.
UNBOUNDED_BATCH_LINES = 4
# Lines a gateway replica keeps in an endpoint while interactive requests use it, and how
# long after the last one it counts as used. On the demo engine (two cores) one line beside
# an interactive tenant cost its TTFT p95 10-16%, two lines 32% (benchmarks/
# batch_beside_interactive.py).
BUSY_BATCH_LINES = 1
BUSY_FOR_S = 5.0


@dataclass(frozen=True)
class EndpointLoad:
    slots: int | None  # requests its engines run at once, as this replica counts them
    in_flight: int  # this replica's requests to it, batch lines included
    waiting: int  # of those, waiting for a slot
    batch_in_flight: int  # this replica's batch lines to it
    interactive_recently: bool = False  # interactive requests in flight within BUSY_FOR_S


def reserve(slots: int) -> int:
    """Slots kept free of batch lines: a quarter, at least one."""
    return max(1, slots // 4)


def batch_room(load: EndpointLoad) -> int:
    """E.g. 16 slots, 3 interactive and 5 batch lines in flight, none waiting: 16 - 4 - 8 = 4
    more lines; with one request waiting: none; with interactive requests lately: up to
    BUSY_BATCH_LINES in all."""
    if load.waiting > 0:
        return 0
    if load.slots is None:
        free = UNBOUNDED_BATCH_LINES - load.batch_in_flight
    else:
        free = load.slots - reserve(load.slots) - load.in_flight
    if load.interactive_recently:
        free = min(free, BUSY_BATCH_LINES - load.batch_in_flight)
    return max(0, free)
