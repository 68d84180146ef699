"""The Files API's bodies as the gateway's OpenAPI document declares them (OpenAI's File,
file list and deletion objects; the routes build the JSON themselves), and the parts of the
document FastAPI cannot see: the multipart upload and the list's query parameters."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from serving.batch.files.rules import (
    EXPIRES_AFTER_S,
    FILE_ID,
    LISTED_PURPOSES,
    MAX_LIST_LIMIT,
    UPLOAD_PURPOSES,
)


class FileObject(BaseModel):
    """OpenAI's File object (`status` is always `processed`: a file is listed once whole)."""

    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"]
    expires_at: int | None = None  # left out when the file does not expire


class FileList(BaseModel):
    """A page of the tenant's files. `first_id` and `last_id` are null on an empty page
    (OpenAI's spec declares them strings, and an empty page has no ids to give)."""

    object: Literal["list"]
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"]
    deleted: Literal[True]


ERROR = {"content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
_ERRORS = {
    "400": "the body or a parameter is refused (its `param` says which)",
    "401": "missing or unknown API key",
    "403": "the key's tenant is deactivated",
    "404": "no such file among the tenant's (another tenant's is not found either)",
    "413": "the file is larger than the tenant's limit per file",
    "429": "the tenant's files would pass its limit on their number or total size "
           "(insufficient_quota; delete some first)",
    "503": "the platform's store or file storage is unavailable",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"description": _ERRORS[str(status)], **ERROR} for status in statuses}


# An inference key, as for every /v1 route (the scheme is the gateway document's).
SECURED = {"security": [{"bearer": []}]}

UPLOAD_BODY = {**SECURED, "requestBody": {"required": True, "content": {"multipart/form-data": {
    "schema": {
        "type": "object", "required": ["file", "purpose"], "additionalProperties": False,
        "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": "for purpose batch: UTF-8 JSONL, one JSON object a line"},
            "purpose": {"type": "string", "enum": list(UPLOAD_PURPOSES)},
            "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
            "expires_after[seconds]": {"type": "integer", "minimum": EXPIRES_AFTER_S[0],
                                       "maximum": EXPIRES_AFTER_S[1]},
        },
    }}}}}

LIST_PARAMETERS = {**SECURED, "parameters": [
    {"name": "after", "in": "query", "required": False,
     "description": "a file id: the page starts after it in the order",
     "schema": {"type": "string", "pattern": FILE_ID.pattern}},
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT,
                "default": MAX_LIST_LIMIT}},
    {"name": "order", "in": "query", "required": False,
     "schema": {"type": "string", "enum": ["asc", "desc"], "default": "desc"}},
    {"name": "purpose", "in": "query", "required": False,
     "schema": {"type": "string", "enum": list(LISTED_PURPOSES)}},
]}

CONTENT = {"description": "the file's bytes, as uploaded",
           "content": {"application/octet-stream": {
               "schema": {"type": "string", "format": "binary"}}}}
