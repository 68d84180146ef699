"""What every test is held to, whatever it runs against."""

from __future__ import annotations

import pytest

from tests.async_clients import OpenedClients


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A test body that opens an `openai.AsyncOpenAI` client closes it (`async with`): one
    left to the garbage collector can hang the connections of the tests after it (see
    tests/async_clients.py). Fixtures close theirs at teardown."""
    clients = OpenedClients()
    with clients.recording():
        result = yield
    left_open = clients.left_open()
    if left_open:
        pytest.fail(f"{item.nodeid} left {len(left_open)} openai.AsyncOpenAI client(s) open: "
                    "close each (async with), see tests/async_clients.py", pytrace=False)
    return result
