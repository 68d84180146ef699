"""Waiting for an asyncio.Event with a timeout, without losing a cancellation.

On Python 3.11, `asyncio.wait_for(event.wait(), t)` returns normally when the task is
cancelled in the same turn of the loop as the event is set: the cancellation is swallowed
(CPython gh-86296, fixed in 3.12). A loop stopped by cancel() while it waits for its
wake-up then runs on: seen as a batch worker whose stop() never returned when a line ended
as it stopped (a CI run hung there). asyncio.timeout tells its own deadline from a
cancellation from outside."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """True once `event` is set, False when `timeout_s` passed first."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True
