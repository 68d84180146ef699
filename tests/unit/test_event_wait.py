"""serving.event_wait.wait_event: a cancellation that arrives in the same turn of the loop as
the event is set stops the waiter (asyncio.wait_for on Python 3.11 returns normally then)."""

from __future__ import annotations

import asyncio

from serving.event_wait import wait_event


async def test_set_is_true_and_a_timeout_is_false():
    event = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 5) is True
    assert await wait_event(asyncio.Event(), 0.01) is False


async def _set_then_cancel(waiter_of) -> asyncio.Task:
    event = asyncio.Event()
    task = asyncio.get_running_loop().create_task(waiter_of(event))
    await asyncio.sleep(0.01)  # the task is waiting for the event
    event.set()
    task.cancel()  # in the same turn of the loop
    await asyncio.gather(task, return_exceptions=True)
    return task


async def test_a_cancellation_as_the_event_is_set_is_not_lost():
    task = await _set_then_cancel(lambda event: wait_event(event, 30))
    assert task.cancelled()


async def test_asyncio_wait_for_loses_it_here_which_is_why_wait_event_exists():
    """When this fails, Python's wait_for keeps the cancellation (3.12+): wait_event can go."""
    task = await _set_then_cancel(lambda event: asyncio.wait_for(event.wait(), 30))
    assert not task.cancelled(), "asyncio.wait_for kept the cancellation: drop wait_event"
    assert task.result() is True  # the event's result, the cancellation gone
