"""Files and batch jobs: OpenAI's Files and Batch APIs (`client.files`, `client.batches`), and
the operators' view of every tenant's batches (`client.admin.batches`) or of one tenant's
own (`client.tenant.batches`, with one of its admin-scoped keys)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO, Any, Literal

from aifactory_sdk._base import Resource, _segment
from aifactory_sdk._core import Call, Upload
from aifactory_sdk.types import (
    Batch,
    BatchList,
    BatchStatus,
    FileDeleted,
    FileList,
    FileObject,
    OperatorBatch,
    OperatorBatchList,
)

FileInput = bytes | str | os.PathLike[str] | IO[bytes] | tuple[str, bytes | IO[bytes]]
BatchEndpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                        "/v1/responses"]


def upload_of(file: FileInput) -> Upload:
    """What `files.create` sends for `file`: bytes as given (named "upload.jsonl"), a path's
    contents under its name, an open binary file's contents from where it stands, or a
    (filename, bytes or binary file) pair."""
    if isinstance(file, tuple):
        filename, content = file
        return Upload(filename, content if isinstance(content, bytes) else content.read())
    if isinstance(file, bytes | bytearray | memoryview):
        return Upload("upload.jsonl", bytes(file))
    if isinstance(file, str | os.PathLike):
        path = Path(file)
        return Upload(path.name, path.read_bytes())
    if isinstance(file, io.TextIOBase):
        raise TypeError("open the file in binary mode ('rb'): its bytes are uploaded as is")
    content = file.read()
    if not isinstance(content, bytes):
        raise TypeError(f"file.read() gave {type(content).__name__}, not bytes: open the file "
                        "in binary mode ('rb')")
    return Upload(Path(str(getattr(file, "name", "upload.jsonl"))).name, content)


def _page(after: str | None, limit: int | None, **more: Any) -> dict[str, Any]:
    return {"after": after, "limit": limit, **more}


class Files(Resource):
    def create(self, *, file: FileInput, purpose: Literal["batch"] = "batch") -> Any:
        """`FileObject`: `file` uploaded (read whole first, so that a retry sends it again).
        A batch file is UTF-8 JSONL, one request a line."""
        return self._send(Call("POST", "/v1/files", FileObject, uploads={
            "file": upload_of(file)}, form={"purpose": purpose}))

    def list(self, *, after: str | None = None, limit: int | None = None,
             order: Literal["asc", "desc"] | None = None, purpose: str | None = None) -> Any:
        """`FileList`: a page of this tenant's files (newest first unless `order="asc"`)."""
        return self._send(Call("GET", "/v1/files", FileList,
                               params=_page(after, limit, order=order, purpose=purpose)))

    def retrieve(self, file_id: str) -> Any:
        """`FileObject` (another tenant's file, like a missing one: NotFoundError)."""
        return self._send(Call("GET", f"/v1/files/{_segment(file_id)}", FileObject))

    def content(self, file_id: str) -> Any:
        """The file's bytes, as uploaded or as the platform wrote them (a batch's output)."""
        return self._send(Call("GET", f"/v1/files/{_segment(file_id)}/content", bytes))

    def delete(self, file_id: str) -> Any:
        """`FileDeleted`; the file can no longer be read."""
        return self._send(Call("DELETE", f"/v1/files/{_segment(file_id)}", FileDeleted))


class Batches(Resource):
    def create(self, *, input_file_id: str, endpoint: BatchEndpoint,
               completion_window: Literal["24h"] = "24h",
               metadata: dict[str, str] | None = None) -> Any:
        """`Batch`: in progress, or failed at once with its `errors` when a line of the input
        is bad (nothing ran then)."""
        body: dict[str, Any] = {"input_file_id": input_file_id, "endpoint": endpoint,
                                "completion_window": completion_window}
        if metadata is not None:
            body["metadata"] = dict(metadata)
        return self._send(Call("POST", "/v1/batches", Batch, body=body))

    def list(self, *, after: str | None = None, limit: int | None = None) -> Any:
        """`BatchList`: a page of this tenant's batches, newest first."""
        return self._send(Call("GET", "/v1/batches", BatchList, params=_page(after, limit)))

    def retrieve(self, batch_id: str) -> Any:
        """`Batch`: its status and `request_counts` now."""
        return self._send(Call("GET", f"/v1/batches/{_segment(batch_id)}", Batch))

    def cancel(self, batch_id: str) -> Any:
        """`Batch`, cancelling: lines running finish, the others end `batch_cancelled`
        (a finished batch: BadRequestError)."""
        return self._send(Call("POST", f"/v1/batches/{_segment(batch_id)}/cancel", Batch))


class _BatchOversight(Resource):
    """Batches as operators manage them, under `_root` (/admin/v1 or /tenant/v1)."""

    _root = ""

    def _list(self, status: BatchStatus | None, after: str | None, limit: int | None,
              **more: Any) -> Any:
        return self._send(Call("GET", f"{self._root}/batches", OperatorBatchList,
                               params=_page(after, limit, status=status, **more)))

    def retrieve(self, batch_id: str) -> Any:
        """`OperatorBatch`."""
        return self._send(Call("GET", f"{self._root}/batches/{_segment(batch_id)}",
                               OperatorBatch))

    def cancel(self, batch_id: str) -> Any:
        """`OperatorBatch`, cancelling, as the Batch API's cancel; recorded in the audit log
        as this key's. A finished batch: BadRequestError."""
        return self._send(Call("POST", f"{self._root}/batches/{_segment(batch_id)}/cancel",
                               OperatorBatch))


class OperatorBatches(_BatchOversight):
    """Every tenant's batches (a platform admin's key)."""

    _root = "/admin/v1"

    def list(self, *, tenant: str | None = None, status: BatchStatus | None = None,
             after: str | None = None, limit: int | None = None) -> Any:
        """`OperatorBatchList`: a page of batches newest first (at most `limit`, 20 by
        default, 100 at most), optionally one tenant's, optionally in one status."""
        return self._list(status, after, limit, tenant=tenant)


class TenantBatches(_BatchOversight):
    """The key's own tenant's batches (one of its admin-scoped keys)."""

    _root = "/tenant/v1"

    def list(self, *, status: BatchStatus | None = None, after: str | None = None,
             limit: int | None = None) -> Any:
        """`OperatorBatchList`: a page of this tenant's batches, newest first."""
        return self._list(status, after, limit)
