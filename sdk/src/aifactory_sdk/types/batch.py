"""Files and batch jobs in OpenAI's shapes, and a batch as an operator sees it (whose it is)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from aifactory_sdk.types._result import Result

BatchStatus = Literal["validating", "failed", "in_progress", "finalizing", "completed",
                      "expired", "cancelling", "cancelled"]

# Files


class FileObject(Result):
    """An uploaded file (purpose `batch`), or a batch's output or error file (`batch_output`).
    `expires_at` is None for a file kept until deleted."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    expires_at: int | None = None


class FileList(Result):
    """A page of files; with `has_more`, pass `last_id` as the next `after`."""

    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileDeleted(Result):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


# Batches


class BatchRequestCounts(BaseModel):
    """The batch's lines: all of them, and of those ended how many answered 200 and not."""

    model_config = ConfigDict(extra="allow")
    total: int
    completed: int
    failed: int


class BatchError(BaseModel):
    """One bad line of the input file, found before anything ran (`line` is 1-based)."""

    model_config = ConfigDict(extra="allow")
    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    model_config = ConfigDict(extra="allow")
    object: Literal["list"] = "list"
    data: list[BatchError]


class Batch(Result):
    """A batch job: its status (OpenAI's machine), its files, and when it reached each
    status (unix seconds; None before it did)."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts
    metadata: dict[str, str] | None = None


class BatchList(Result):
    """A page of batches, newest first; with `has_more`, pass `last_id` as the next `after`."""

    object: Literal["list"] = "list"
    data: list[Batch]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class OperatorBatch(Batch):
    """A batch as the platform's operators (or its tenant's admins) see it: whose it is, and
    the prefix of the key that made it."""

    tenant: str
    key_prefix: str


class OperatorBatchList(Result):
    object: Literal["list"] = "list"
    data: list[OperatorBatch]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
