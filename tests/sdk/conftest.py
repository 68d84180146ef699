"""The SDK tests' shared fixture: the clients' waits taken on a hand-moved clock."""

from __future__ import annotations

import aifactory_sdk._client as client_module
import pytest


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits between attempts, taken on a hand-moved clock instead of slept; jitter 1."""
    now = [0.0]
    taken: list[float] = []

    def wait(seconds: float) -> None:
        taken.append(seconds)
        now[0] += seconds

    async def async_wait(seconds: float) -> None:
        wait(seconds)

    monkeypatch.setattr(client_module, "_sleep", wait)
    monkeypatch.setattr(client_module, "_async_sleep", async_wait)
    monkeypatch.setattr(client_module, "_clock", lambda: now[0])
    monkeypatch.setattr(client_module, "_jitter", lambda: 1.0)
    return taken
