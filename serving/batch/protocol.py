"""The Batch API's bodies as the gateway's OpenAPI document declares them: OpenAI's Batch
object and the list of them (the /v1 routes build the JSON themselves, `Batch.as_json`), and
the operator's view of a batch, which adds whose it is (the admin and self-service routes)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from serving.batch.batch_store import BATCH_ID, Batch
from serving.batch.files.protocol import ERROR, SECURED
from serving.batch.lifecycle import BatchStatus

LIST_LIMIT = (1, 100, 20)  # OpenAI's page of batches: least, most, default


class BatchRequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchLineError(BaseModel):
    """Why validation failed the batch: one bad line of its input file (1-based `line`)."""

    code: str
    message: str
    param: str | None
    line: int | None


class BatchErrors(BaseModel):
    object: Literal["list"]
    data: list[BatchLineError]


class BatchObject(BaseModel):
    """OpenAI's Batch object; each `*_at` is null until the batch reaches that status."""

    id: str
    object: Literal["batch"]
    endpoint: str
    errors: BatchErrors | None
    input_file_id: str
    completion_window: Literal["24h"]
    status: BatchStatus
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: BatchRequestCounts
    metadata: dict[str, str] | None


class BatchList(BaseModel):
    """A page of batches, newest first; pass `last_id` as `after` for the next one."""

    object: Literal["list"]
    data: list[BatchObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class OperatorBatch(BatchObject):
    """A batch as an operator sees it: whose it is, and the prefix of the key that made it."""

    tenant: str
    key_prefix: str

    @classmethod
    def of(cls, batch: Batch, completed: int, failed: int) -> OperatorBatch:
        return cls(**batch.as_json(completed, failed), tenant=batch.tenant,
                   key_prefix=batch.key_prefix)


class OperatorBatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OperatorBatch]
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def of(cls, data: list[OperatorBatch], has_more: bool) -> OperatorBatchList:
        return cls(data=data, first_id=data[0].id if data else None,
                   last_id=data[-1].id if data else None, has_more=has_more)


def listed(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """A page of Batch objects (as `Batch.as_json` gives them) as OpenAI lists them."""
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


# The parts of the gateway's document the /v1 routes cannot show FastAPI (they read their
# requests themselves).

_ERRORS = {
    "400": "the body or a parameter is refused (its `param` says which), or the batch "
           "cannot be cancelled",
    "401": "missing or unknown API key",
    "403": "the key's tenant is deactivated",
    "404": "no such batch, or input file, among the tenant's (another tenant's is not found "
           "either)",
    "413": "the request body is larger than the gateway takes",
    "503": "the platform's store is unavailable",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"description": _ERRORS[str(status)], **ERROR} for status in statuses}


CREATE_BODY = {**SECURED, "requestBody": {"required": True, "content": {"application/json": {
    "schema": {
        "type": "object", "required": ["input_file_id", "endpoint", "completion_window"],
        "properties": {
            "input_file_id": {"type": "string"},
            "endpoint": {"type": "string"},
            "completion_window": {"type": "string", "enum": ["24h"]},
            "metadata": {"type": ["object", "null"],
                         "additionalProperties": {"type": "string"}},
        },
    }}}}}

LIST_PARAMETERS = {**SECURED, "parameters": [
    {"name": "after", "in": "query", "required": False,
     "description": "a batch id: the page starts after it, newest first",
     "schema": {"type": "string", "pattern": BATCH_ID.pattern}},
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": LIST_LIMIT[0], "maximum": LIST_LIMIT[1],
                "default": LIST_LIMIT[2]}},
]}
