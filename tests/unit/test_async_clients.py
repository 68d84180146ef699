"""The check that no test leaves an async openai client open (tests/async_clients.py)."""

from __future__ import annotations

import openai

from tests.async_clients import OpenedClients

NOWHERE = "http://127.0.0.1:9/v1"  # never called: making a client connects to nothing


async def test_a_client_left_open_is_found_and_a_closed_one_is_not():
    clients = OpenedClients()
    with clients.recording():
        left = openai.AsyncOpenAI(base_url=NOWHERE, api_key="k")
        async with openai.AsyncOpenAI(base_url=NOWHERE, api_key="k") as closed:
            closed.with_options(timeout=5)  # a copy, closed with its original
    assert len(clients.opened) == 3
    assert clients.left_open() == [left]
    await left.close()
    assert clients.left_open() == []


async def test_only_clients_made_while_recording_are_held():
    clients = OpenedClients()
    with clients.recording():
        pass
    async with openai.AsyncOpenAI(base_url=NOWHERE, api_key="k"):
        pass
    assert clients.opened == []
