"""The Files API's rules, pure: which purposes are taken, what a file id looks like, how a
client's filename is shown, the per-tenant limits and the decision to refuse an upload, and
a list request's pagination. No I/O: the store, the storage folder and the clock are outside."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# -- purposes --------------------------------------------------------------------------------

# What OpenAI's POST /v1/files takes. This platform runs batches only: the other purposes
# name APIs it does not serve (Assistants, fine-tuning, vision fine-tuning, evals) or, for
# user_data, files nothing here would read; they are refused with a 400 naming `purpose`,
# rather than kept where no API can use them.
OPENAI_UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
UPLOAD_PURPOSES = ("batch",)
# What a file may be: an upload, or a file the platform wrote (a batch's output and errors).
BATCH_OUTPUT = "batch_output"
# What GET /v1/files?purpose= may filter by: any purpose OpenAI names (the others list none).
LISTED_PURPOSES = (*OPENAI_UPLOAD_PURPOSES, "assistants_output", BATCH_OUTPUT,
                   "fine-tune-results")


def purpose_problem(purpose: str) -> str | None:
    """Why an upload's `purpose` is refused, or None when it is taken."""
    if purpose in UPLOAD_PURPOSES:
        return None
    if purpose in OPENAI_UPLOAD_PURPOSES:
        return (f"purpose '{purpose}' is not served by this platform: it takes files for "
                "the Batch API only (purpose 'batch')")
    return f"purpose must be 'batch', got {shown(purpose)}"


# -- ids and names ---------------------------------------------------------------------------

# "file-", 12 hex digits of the creation time in ms, 20 random hex digits: ids sort by
# creation (so a page's `after` cursor needs no lookup, and works after its file is deleted)
# and cannot be guessed.
FILE_ID = re.compile(r"^file-[0-9a-f]{32}$")
MAX_FILENAME_CHARS = 255


def new_file_id(now_ms: int, random_hex: str) -> str:
    """E.g. new_file_id(1764825600000, "ab" * 10) = "file-019ae7e6a800abab...ab"."""
    if not re.fullmatch(r"[0-9a-f]{20}", random_hex) or not 0 <= now_ms < 16**12:
        raise ValueError("a file id needs a time in ms below 16**12 and 20 random hex digits")
    return f"file-{now_ms:012x}{random_hex}"


def is_file_id(value: object) -> bool:
    return isinstance(value, str) and FILE_ID.fullmatch(value) is not None


def shown(value: str, limit: int = 64) -> str:
    """A client's string in an error message: quoted, escaped, cut short."""
    text = ascii(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def display_filename(raw: str) -> str:
    """The client's filename as the API shows it back: as given, but with control
    characters (NUL, newlines, escapes; PostgreSQL cannot even store a NUL) replaced by
    U+FFFD and cut to 255 characters. It is never part of a path: bytes are kept by id."""
    cleaned = "".join("\ufffd" if unicodedata.category(c) in ("Cc", "Cs") else c for c in raw)
    return cleaned[:MAX_FILENAME_CHARS]


# -- limits ----------------------------------------------------------------------------------

MiB = 1024 * 1024
# ASCII digits only (str.isdigit also takes "²", which int() refuses), and few of them.
_DIGITS = re.compile(r"[0-9]{1,20}")
ByteCount = Annotated[int, Field(ge=1, le=10**15)]
FileCount = Annotated[int, Field(ge=1, le=10**7)]


class FileLimits(BaseModel):
    """One tenant's limits on its files. The defaults are the platform's (the config file's
    `server.files` may change them; OpenAI takes batch inputs up to 200 MB: half that
    here, as every byte lands on the gateway's storage folder)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_file_bytes: ByteCount = 100 * MiB
    max_files: FileCount = 500
    max_total_bytes: ByteCount = 2048 * MiB


class FileLimitOverrides(BaseModel):
    """A tenant's own limits; a limit left out (None) is the platform's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_file_bytes: ByteCount | None = None
    max_files: FileCount | None = None
    max_total_bytes: ByteCount | None = None

    def over(self, defaults: FileLimits) -> FileLimits:
        return defaults.model_copy(update=self.model_dump(exclude_none=True))


@dataclass(frozen=True)
class FileUsage:
    """What a tenant's files take now."""

    files: int
    bytes: int


@dataclass(frozen=True)
class Refused:
    """An upload refused, as the OpenAI error to answer with."""

    status: int
    code: str
    message: str
    param: str = "file"


def refuse_upload(limits: FileLimits, usage: FileUsage, size: int) -> Refused | None:
    """Whether a new file of `size` bytes (so far: this is asked while it streams in, and
    again when it is complete) may join the tenant's files.

    Too large for one file is a 413: no retry can help that request. Past the count or the
    total is the tenant's storage quota: a 429 `insufficient_quota`, as OpenAI answers a
    spent quota, which deleting files lifts (the route tells clients not to retry it as is).
    E.g. limits 10 MiB/3 files/25 MiB, usage 2 files of 20 MiB: a 6 MiB upload is a 429
    (20 + 6 > 25); with usage 3 files of 1 MiB, any upload is a 429 (3 + 1 > 3)."""
    if size > limits.max_file_bytes:
        return Refused(413, "file_too_large",
                       f"the file is larger than this tenant's limit of "
                       f"{limits.max_file_bytes} bytes per file")
    if usage.files + 1 > limits.max_files:
        return Refused(429, "insufficient_quota",
                       f"this tenant has {usage.files} files, its limit is {limits.max_files}: "
                       "delete some first")
    if usage.bytes + size > limits.max_total_bytes:
        return Refused(429, "insufficient_quota",
                       f"this tenant's files would take more than its limit of "
                       f"{limits.max_total_bytes} bytes: delete some first")
    return None


# A multipart body carries its file plus a few short fields and part headers; a body
# declared larger than the file limit plus this cannot hold a file within the limit.
MULTIPART_SLACK_BYTES = 64 * 1024


def declared_too_large(limits: FileLimits, content_length: str | None) -> bool:
    """Whether the body's Content-Length alone rules the upload out (refused unread)."""
    if content_length is None or not _DIGITS.fullmatch(content_length):
        return False
    return int(content_length) > limits.max_file_bytes + MULTIPART_SLACK_BYTES


# -- expiry (OpenAI's expires_after) ---------------------------------------------------------

EXPIRES_AFTER_S = (3600, 30 * 86400)  # OpenAI's bounds: an hour to 30 days


def expiry_problem(anchor: str | None, seconds: str | None) -> tuple[str, str] | None:
    """(message, param) when `expires_after[...]` is wrong; both absent means no expiry
    (a file stays until it is deleted)."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        return "expires_after[anchor] must be 'created_at'", "expires_after[anchor]"
    low, high = EXPIRES_AFTER_S
    if seconds is None or not _DIGITS.fullmatch(seconds) or not low <= int(seconds) <= high:
        return (f"expires_after[seconds] must be an integer from {low} to {high}",
                "expires_after[seconds]")
    return None


# -- listing ---------------------------------------------------------------------------------

MAX_LIST_LIMIT = 10_000  # OpenAI's range is 1 to 10,000, and its default the most


@dataclass(frozen=True)
class ListQuery:
    after: str | None = None
    limit: int = MAX_LIST_LIMIT
    order: Literal["asc", "desc"] = "desc"
    purpose: str | None = None


@dataclass(frozen=True)
class BadParam:
    message: str
    param: str


def list_query(params: Mapping[str, Sequence[str]]) -> ListQuery | BadParam:
    """GET /v1/files's query (each name with the values given): its pagination, or the
    first parameter that is wrong. Unknown parameters are ignored, as OpenAI does."""
    values: dict[str, str] = {}
    for name in ("after", "limit", "order", "purpose"):
        given = params.get(name, ())
        if len(given) > 1:
            return BadParam(f"{name} may be given once", name)
        if given:
            values[name] = given[0]
    query = ListQuery()
    if "after" in values:
        # Any well-formed id is a place in the order, whether or not its file still exists.
        if not is_file_id(values["after"]):
            return BadParam(f"after must be a file id (file-...), got {shown(values['after'])}",
                            "after")
        query = ListQuery(after=values["after"])
    limit = values.get("limit")
    if limit is not None:
        if not _DIGITS.fullmatch(limit) or not 1 <= int(limit) <= MAX_LIST_LIMIT:
            return BadParam(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, got "
                            f"{shown(limit)}", "limit")
        query = ListQuery(query.after, int(limit))
    order = values.get("order", "desc")
    if order not in ("asc", "desc"):
        return BadParam(f"order must be 'asc' or 'desc', got {shown(order)}", "order")
    purpose = values.get("purpose")
    if purpose is not None and purpose not in LISTED_PURPOSES:
        return BadParam(f"purpose must be one of {', '.join(LISTED_PURPOSES)}, got "
                        f"{shown(purpose)}", "purpose")
    return ListQuery(query.after, query.limit, order, purpose)
