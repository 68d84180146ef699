"""Batch lines take only what interactive traffic leaves on an endpoint."""

from __future__ import annotations

import pytest

from serving.batch.capacity import (
    BUSY_BATCH_LINES,
    UNBOUNDED_BATCH_LINES,
    EndpointLoad,
    batch_room,
)


@pytest.mark.parametrize(("load", "room"), [
    (EndpointLoad(slots=16, in_flight=0, waiting=0, batch_in_flight=0), 12),  # 4 kept free
    (EndpointLoad(slots=16, in_flight=8, waiting=0, batch_in_flight=5), 4),
    (EndpointLoad(slots=16, in_flight=12, waiting=0, batch_in_flight=12), 0),  # full of batch
    (EndpointLoad(slots=16, in_flight=15, waiting=0, batch_in_flight=2), 0),  # interactive back
    (EndpointLoad(slots=16, in_flight=9, waiting=1, batch_in_flight=0), 0),  # someone waits
    (EndpointLoad(slots=2, in_flight=0, waiting=0, batch_in_flight=0), 1),  # one kept free
    (EndpointLoad(slots=1, in_flight=0, waiting=0, batch_in_flight=0), 0),  # never the last
    (EndpointLoad(slots=None, in_flight=3, waiting=0, batch_in_flight=1),
     UNBOUNDED_BATCH_LINES - 1),
])
def test_batch_room(load: EndpointLoad, room: int) -> None:
    assert batch_room(load) == room


def test_interactive_demand_returning_stops_new_lines_at_once() -> None:
    idle = EndpointLoad(slots=8, in_flight=6, waiting=0, batch_in_flight=6)
    busy = EndpointLoad(slots=8, in_flight=8, waiting=2, batch_in_flight=6)
    assert batch_room(idle) == 0 and batch_room(busy) == 0
    assert batch_room(EndpointLoad(slots=8, in_flight=2, waiting=0, batch_in_flight=2)) == 4


@pytest.mark.parametrize(("load", "room"), [
    # Interactive requests lately: BUSY_BATCH_LINES only, however many slots are free.
    (EndpointLoad(slots=256, in_flight=1, waiting=0, batch_in_flight=0,
                  interactive_recently=True), BUSY_BATCH_LINES),
    (EndpointLoad(slots=256, in_flight=BUSY_BATCH_LINES, waiting=0,
                  batch_in_flight=BUSY_BATCH_LINES, interactive_recently=True), 0),
    # Lines sent while it was quiet are not cut (they finish), but no more go.
    (EndpointLoad(slots=256, in_flight=40, waiting=0, batch_in_flight=40,
                  interactive_recently=True), 0),
    (EndpointLoad(slots=None, in_flight=1, waiting=0, batch_in_flight=0,
                  interactive_recently=True), min(UNBOUNDED_BATCH_LINES, BUSY_BATCH_LINES)),
    # Quiet again: the whole free room.
    (EndpointLoad(slots=256, in_flight=2, waiting=0, batch_in_flight=2), 256 - 64 - 2),
])
def test_interactive_traffic_keeps_the_batch_to_busy_lines(load, room) -> None:
    assert batch_room(load) == room
