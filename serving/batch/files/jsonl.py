"""The structural check a `purpose=batch` upload gets while it streams in: UTF-8 text, one
JSON object per line. Cheap and pure, fed the file in pieces of any size. Whether each line
is a valid batch request (custom_id, method, url, body, a model the tenant may call) is
checked when a batch is created from the file (serving.batch.batch_input), as OpenAI does."""

from __future__ import annotations

import json

# A line is one request body (the gateway takes up to 8 MiB) plus its custom_id, method and
# url; a "line" past this is a file without newlines, not a request.
MAX_LINE_BYTES = 8 * 1024 * 1024 + 64 * 1024


class JsonlCheck:
    """Feed it the file's bytes in order, then ask `problem()`. It keeps at most one line
    in memory, and stops looking after the first problem."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self.lines = 0  # lines holding a JSON object
        self._number = 0  # lines read so far
        self._partial = bytearray()
        self._blank: int | None = None  # the first blank line since the last object
        self._problem: str | None = None

    def feed(self, data: bytes) -> None:
        if self._problem is not None:
            return
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            self._partial += data[start:end]
            start = end + 1
            if self._too_long():
                return
            self._line(bytes(self._partial))
            self._partial.clear()
            if self._problem is not None:
                return
        self._partial += data[start:]
        self._too_long()

    def _too_long(self) -> bool:
        if len(self._partial) <= self.max_line_bytes:
            return False
        self._problem = (f"line {self._number + 1} is longer than {self.max_line_bytes} "
                         "bytes: a batch file holds one request per line")
        return True

    def problem(self) -> str | None:
        """What is wrong with the file fed so far, taken as complete; None when nothing."""
        if self._problem is None and self._partial:
            self._line(bytes(self._partial))
            self._partial.clear()
        if self._problem is None and self.lines == 0:
            self._problem = "the file has no lines: a batch file holds one JSON object per line"
        return self._problem

    def _line(self, raw: bytes) -> None:
        self._number += 1
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._problem = f"line {self._number} is not UTF-8 text"
            return
        if not text.strip():
            # Blank lines may end the file (an editor's last newline), not sit between lines.
            self._blank = self._blank or self._number
            return
        if self._blank is not None:
            self._problem = f"line {self._blank} is blank: each line must be a JSON object"
            return
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            self._problem = f"line {self._number} is not valid JSON"
            return
        if not isinstance(value, dict):
            self._problem = f"line {self._number} is not a JSON object"
            return
        self.lines += 1
