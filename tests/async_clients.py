"""Which `openai.AsyncOpenAI` clients a stretch of test code opened, and which it left open.

An async client left open is a hazard to the tests after it, not only a leak. Its connections
sit in a reference cycle; when the garbage collector takes the cycle it closes their sockets
at once, then openai's `__del__` schedules the client's own close, which runs later on the
loop and unregisters those file descriptors from the loop's selector. By then the next
connections may have those numbers: they stop being read, and their replies sit unread in
the kernel until the client's timeout (seen: a streamed chat and an error reply, complete on
the wire, each hung for the full timeout). tests/conftest.py fails a test that leaves one
open; each is held until that check, so none can be collected mid-test."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import openai


class OpenedClients:
    """The async clients made while `recording()`, held (not weakly) so none is collected
    before it is checked."""

    def __init__(self) -> None:
        self.opened: list[openai.AsyncOpenAI] = []

    def left_open(self) -> list[openai.AsyncOpenAI]:
        # A copy made by with_options shares its original's connections, and is closed
        # with it.
        return [client for client in self.opened if not client.is_closed()]

    @contextmanager
    def recording(self) -> Iterator[OpenedClients]:
        original = openai.AsyncOpenAI.__init__

        @functools.wraps(original)
        def recorded(client, *args, **kwargs):
            original(client, *args, **kwargs)
            self.opened.append(client)

        openai.AsyncOpenAI.__init__ = recorded
        try:
            yield self
        finally:
            openai.AsyncOpenAI.__init__ = original
