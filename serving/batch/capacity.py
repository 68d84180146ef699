"""How many batch lines one gateway replica may send to an endpoint now, a pure function of
what its in-flight bound shows. Batch work takes only what interactive traffic leaves: no new
line while any request waits for an engine slot (an interactive request is never queued
behind batch lines), and a reserve of slots stays free for interactive arrivals, so a
returning tenant finds room at once while the lines already running finish."""

from __future__ import annotations

from dataclasses import dataclass

# Where an endpoint's engines run no bounded number of requests at once (slots unknown), a
# gateway replica sends at most this many batch lines to it.
UNBOUNDED_BATCH_LINES = 4


@dataclass(frozen=True)
class EndpointLoad:
    slots: int | None  # requests its engines run at once, as this replica counts them
    in_flight: int  # this replica's requests to it, batch lines included
    waiting: int  # of those, waiting for a slot
    batch_in_flight: int  # this replica's batch lines to it


def reserve(slots: int) -> int:
    """Slots kept free of batch lines: a quarter, at least one."""
    return max(1, slots // 4)


def batch_room(load: EndpointLoad) -> int:
    """E.g. 16 slots, 3 interactive and 5 batch lines in flight, none waiting: 16 - 4 - 8 = 4
    more lines; with one request waiting: none."""
    if load.waiting > 0:
        return 0
    if load.slots is None:
        return max(0, UNBOUNDED_BATCH_LINES - load.batch_in_flight)
    return max(0, load.slots - reserve(load.slots) - load.in_flight)
