"""Server-sent event streams as typed chunks, sans I/O: chat's and completions' (ended by
`[DONE]`) and the Responses API's (ended by its closing event); an error event raises the
typed error."""

from __future__ import annotations

import json

from pydantic import BaseModel, ValidationError

from aifactory_sdk import errors
from aifactory_sdk._core import error_from_event
from aifactory_sdk.types import Usage


class SSEDecoder:
    """Server-sent events, one line at a time: `feed` returns an event's data once the blank
    line that ends it arrives. Only `data:` fields matter here; comments are skipped."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        if line == "":
            return self.flush()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value.removeprefix(" "))
        return None

    def flush(self) -> str | None:
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return data


class ChunkDecoder:
    """A stream's lines as typed chunks. An `{"error": ...}` event (or a Responses `error`
    event) raises the typed error; `[DONE]` or a Responses closing event ends the stream; the
    usage event's counts are kept in `usage`."""

    def __init__(self, chunk: type[BaseModel], request_id: str | None) -> None:
        self._chunk = chunk
        self._request_id = request_id
        self._events = SSEDecoder()
        self.done = False
        self.usage: Usage | None = None

    def feed(self, line: str) -> BaseModel | None:
        return self._event(self._events.feed(line))

    def finish(self) -> BaseModel | None:
        """At the end of the body: the last event if unterminated; a body that ends without
        `[DONE]` broke on the way."""
        last = self._event(self._events.flush())
        if not self.done:
            raise errors.APIConnectionError("the stream ended before its end (a [DONE] or closing event)",
                                            request_id=self._request_id)
        return last

    def _event(self, data: str | None) -> BaseModel | None:
        if data is None or self.done:
            return None
        if data == "[DONE]":
            self.done = True
            return None
        try:
            payload = json.loads(data)
        except ValueError:
            raise errors.AIFactoryError(f"a stream event is not JSON: {data[:200]!r}") from None
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            self.done = True
            raise error_from_event(payload["error"], self._request_id)
        if isinstance(payload, dict) and payload.get("type") == "error":  # Responses' form
            self.done = True
            raise error_from_event(payload, self._request_id)
        try:
            chunk = self._chunk.model_validate(payload)
        except ValidationError as exc:
            raise errors.AIFactoryError(
                f"a stream event is not a {self._chunk.__name__}: {exc}") from None
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = usage
        # A Responses stream ends with its closing event; chat's and completions' with [DONE].
        if getattr(chunk, "closes", False):
            self.done = True
        return chunk
