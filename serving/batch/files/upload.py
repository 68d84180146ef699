"""Reads a POST /v1/files body (multipart/form-data: `file`, `purpose`, optionally OpenAI's
`expires_after[anchor]` and `expires_after[seconds]`) straight from the request stream into
an upload's temporary file, checking as it goes: the file's size against the tenant's limits
(reading stops at the first byte past them), each field once, no other field, short fields,
and a batch file's lines (serving.batch.files.jsonl). Nothing is buffered beyond one
incoming chunk and one JSONL line; Starlette's own form parser would spool any size to disk
first, which is why the gateway parses the body itself (with python-multipart, as Starlette
does underneath)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from serving.batch.files.jsonl import JsonlCheck
from serving.batch.files.rules import Refused, expiry_problem, purpose_problem, shown
from serving.batch.files.storage import Upload

FILE = "file"
FIELDS = (FILE, "purpose", "expires_after[anchor]", "expires_after[seconds]")
MAX_FIELD_BYTES = 1024  # `purpose` and the expiry are a few characters
FORM = "the body must be multipart/form-data with the fields file and purpose"


class UploadRefused(Exception):
    """The upload is refused: the OpenAI error to answer with."""

    def __init__(self, status: int, message: str, param: str | None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    @classmethod
    def of(cls, refused: Refused) -> UploadRefused:
        return cls(refused.status, refused.message, refused.param, refused.code)


@dataclass(frozen=True)
class UploadForm:
    """A body read whole and found well-formed; the file's bytes are in the upload."""

    purpose: str
    filename: str
    expires_after_s: int | None
    jsonl_problem: str | None  # what a batch file's structural check found, if anything


def _bad(message: str, param: str | None = FILE) -> UploadRefused:
    return UploadRefused(400, message, param)


class _Form:
    """python-multipart's callbacks: the parts' headers and data, checked as they come."""

    def __init__(self, check_size: Callable[[int], Refused | None]) -> None:
        self.check_size = check_size
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.received = 0
        self.pending: list[bytes] = []  # file bytes parsed but not yet written
        self.ended = False
        self._seen: set[str] = set()
        self._name: str | None = None
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._data = bytearray()

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end, "on_end": self.end}

    def part_begin(self) -> None:
        self._name, self._disposition = None, b""
        self._data.clear()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def header_end(self) -> None:
        if bytes(self._header_name).strip().lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def headers_finished(self) -> None:
        kind, options = parse_options_header(self._disposition)
        raw_name = options.get(b"name")
        if kind != b"form-data" or raw_name is None:
            raise _bad("each part of the body needs a Content-Disposition: form-data header "
                       "with a name")
        name = raw_name.decode("utf-8", "replace")
        if name not in FIELDS:
            safe = name if name.isascii() and name.isprintable() and len(name) <= 64 else None
            raise _bad(f"unknown field {shown(name)}: an upload takes {', '.join(FIELDS)}",
                       safe)
        if name in self._seen:
            raise _bad(f"the field {name} is given twice", name)
        self._seen.add(name)
        self._name = name
        if name == FILE:
            self.filename = options.get(b"filename", b"").decode("utf-8", "replace")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._name == FILE:
            self.received += end - start
            refused = self.check_size(self.received)
            if refused is not None:
                raise UploadRefused.of(refused)
            self.pending.append(data[start:end])
            return
        self._data += data[start:end]
        if len(self._data) > MAX_FIELD_BYTES:
            raise _bad(f"the field {self._name} is longer than {MAX_FIELD_BYTES} bytes",
                       self._name)

    def part_end(self) -> None:
        if self._name is None or self._name == FILE:
            return
        try:
            value = self._data.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(f"the field {self._name} is not UTF-8 text", self._name) from None
        self.fields[self._name] = value
        if self._name == "purpose":
            problem = purpose_problem(value)
            if problem is not None:  # refused before the file is read
                raise _bad(problem, "purpose")

    def end(self) -> None:
        self.ended = True


async def read_upload(content_type: str | None, stream: AsyncIterator[bytes], upload: Upload,
                      check_size: Callable[[int], Refused | None]) -> UploadForm:
    """Read the body into `upload`; UploadRefused at the first problem (the caller discards
    the upload). `check_size(bytes so far)` says when the file passes a limit."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise _bad(FORM)
    form = _Form(check_size)
    lines = JsonlCheck()
    try:
        parser = MultipartParser(boundary, form.callbacks())
    except FormParserError:
        raise _bad(FORM) from None

    def store(chunks: list[bytes]) -> None:
        for chunk in chunks:
            upload.write(chunk)
            lines.feed(chunk)

    async for chunk in stream:
        try:
            parser.write(chunk)
        except FormParserError:
            raise _bad(f"{FORM}: the body is not valid multipart") from None
        if form.pending:
            chunks, form.pending = form.pending, []
            # Disk writes and JSON parsing off the event loop: it carries token streams.
            await asyncio.to_thread(store, chunks)
        if form.ended:
            break  # an epilogue after the closing boundary is not read
    if not form.ended:
        raise _bad(f"{FORM}: the body ends before its closing boundary")
    if form.filename is None:
        raise _bad("no file given: the body needs a field named file")
    purpose = form.fields.get("purpose")
    if purpose is None:
        raise _bad("no purpose given: the body needs a field named purpose ('batch')",
                   "purpose")
    anchor = form.fields.get("expires_after[anchor]")
    seconds = form.fields.get("expires_after[seconds]")
    expiry = expiry_problem(anchor, seconds)
    if expiry is not None:
        raise _bad(*expiry)
    problem = await asyncio.to_thread(lines.problem)
    return UploadForm(purpose, form.filename, None if seconds is None else int(seconds),
                      problem)
