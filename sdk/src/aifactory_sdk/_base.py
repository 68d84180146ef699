"""What every resource is made of: the client it sends through, and ids made path segments."""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import quote

from aifactory_sdk._core import Call


def _segment(value: str | int) -> str:
    """One path segment, escaped so that a name can never become a different path."""
    text = str(value)
    escaped = quote(text, safe="")
    # "." and ".." would be resolved away by URL normalisation; escaped they stay a name.
    return escaped.replace(".", "%2E") if set(text) <= {"."} else escaped


class Sender(Protocol):
    """A client: `Client._send` returns the result, `AsyncClient._send` an awaitable of it."""

    def _send(self, call: Call) -> Any: ...


class Resource:
    def __init__(self, client: Sender) -> None:
        self._client = client

    def _send(self, call: Call) -> Any:
        return self._client._send(call)
