"""The Files API's routes, OpenAI's shapes: POST/GET /v1/files, GET/DELETE
/v1/files/{file_id}, GET /v1/files/{file_id}/content. Each authenticates first (as the
inference routes do: no body is read for an unknown key), then acts for the key's tenant
only: another tenant's file answers exactly as a missing one. Errors are OpenAI's, with
`param`. Not audited: files are tenant data, not administration."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, BinaryIO

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from serving.batch.files import protocol
from serving.batch.files.rules import (
    BadParam,
    Refused,
    declared_too_large,
    is_file_id,
    list_query,
    refuse_upload,
    shown,
)
from serving.batch.files.service import Files
from serving.batch.files.upload import UploadRefused, read_upload
from serving.gateway.access import Access
from serving.gateway.errors import error_response
from serving.gateway.exchange import Refusal
from serving.gateway.pipeline import for_caller as pipeline_for_caller
from serving.tenancy import Principal

logger = logging.getLogger(__name__)
READ_CHUNK = 1024 * 1024


def refusal(status: int, message: str, param: str | None, code: str | None = None) -> Response:
    headers = {}
    if status == 429:  # waiting does not help: only deleting files does
        headers["x-should-retry"] = "false"
    if status in (413, 429):  # refused before the body was read to its end
        headers["connection"] = "close"
    return error_response(status, message, param=param, code=code, headers=headers)


def not_found(file_id: str) -> Response:
    said = file_id if is_file_id(file_id) else shown(file_id)
    return error_response(404, f"No such File object: {said}", param="file_id")


def build_files_router(access: Access, files: Files) -> APIRouter:
    router = APIRouter()

    async def for_caller(request: Request, act: Callable[[Principal], Awaitable[Any]]) -> Any:
        """The pipeline's step, with the storage folder's failures (full, gone, unmounted)
        told apart from the store's."""
        async def acting(caller: Principal) -> Any:
            try:
                return await act(caller)
            except OSError as exc:
                logger.warning("file storage unavailable: %r", exc)
                raise Refusal(error_response(
                    503, "the platform's file storage is unavailable; retry shortly",
                    headers={"retry-after": "1"})) from None

        return await pipeline_for_caller(access, request, acting,
                                         passes=(Refusal, UploadRefused, ClientDisconnect))

    @router.post("/v1/files", openapi_extra=protocol.UPLOAD_BODY,
                 responses={200: {"model": protocol.FileObject},
                            **protocol.errors(400, 401, 403, 413, 429, 503)})
    async def upload_file(request: Request) -> Response:
        try:
            return await for_caller(request, lambda caller: _upload(files, caller, request))
        except Refusal as refused:
            return refused.response
        except UploadRefused as refused:
            return refusal(refused.status, refused.message, refused.param, refused.code)
        except ClientDisconnect:  # gone mid-upload: nothing kept, no one to answer
            return Response(status_code=400)

    @router.get("/v1/files", openapi_extra=protocol.LIST_PARAMETERS,
                responses={200: {"model": protocol.FileList},
                           **protocol.errors(400, 401, 403, 503)})
    async def list_files(request: Request) -> Response:
        query = list_query({name: request.query_params.getlist(name)
                            for name in request.query_params})

        async def listed(caller: Principal) -> tuple[list, bool]:
            if isinstance(query, BadParam):
                raise Refusal(error_response(400, query.message, param=query.param))
            return await asyncio.to_thread(files.list, caller.tenant, query)

        try:
            found, more = await for_caller(request, listed)
        except Refusal as refused:
            return refused.response
        data = [f.as_openai() for f in found]
        return JSONResponse({"object": "list", "data": data,
                             "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None, "has_more": more})

    @router.get("/v1/files/{file_id}", openapi_extra=protocol.SECURED,
                responses={200: {"model": protocol.FileObject},
                           **protocol.errors(401, 403, 404, 503)})
    async def retrieve_file(file_id: str, request: Request) -> Response:
        try:
            found = await for_caller(
                request, lambda caller: asyncio.to_thread(files.get, caller.tenant, file_id))
        except Refusal as refused:
            return refused.response
        return not_found(file_id) if found is None else JSONResponse(found.as_openai())

    @router.get("/v1/files/{file_id}/content", openapi_extra=protocol.SECURED,
                responses={200: protocol.CONTENT, **protocol.errors(401, 403, 404, 503)})
    async def file_content(file_id: str, request: Request) -> Response:
        try:
            opened = await for_caller(
                request, lambda caller: asyncio.to_thread(files.open, caller.tenant, file_id))
        except Refusal as refused:
            return refused.response
        if opened is None:
            return not_found(file_id)
        record, content = opened
        return StreamingResponse(_chunks(content), media_type="application/octet-stream",
                                 headers={"content-length": str(record.bytes)})

    @router.delete("/v1/files/{file_id}", openapi_extra=protocol.SECURED,
                   responses={200: {"model": protocol.FileDeleted},
                              **protocol.errors(401, 403, 404, 503)})
    async def delete_file(file_id: str, request: Request) -> Response:
        try:
            gone = await for_caller(
                request, lambda caller: asyncio.to_thread(files.delete, caller.tenant, file_id))
        except Refusal as refused:
            return refused.response
        if not gone:
            return not_found(file_id)
        return JSONResponse({"id": file_id, "object": "file", "deleted": True})

    return router


async def _upload(files: Files, caller: Principal, request: Request) -> Response:
    """The body streamed into an upload under the tenant's limits, then kept as its file."""
    tenant = caller.tenant
    limits, usage = await asyncio.to_thread(files.limits_and_usage, tenant)
    full = refuse_upload(limits, usage, 0)  # no room at all: refused unread
    if full is not None:
        raise UploadRefused.of(full)
    if declared_too_large(limits, request.headers.get("content-length")):
        raise UploadRefused.of(refuse_upload(limits, usage, limits.max_file_bytes + 1))
    upload = await asyncio.to_thread(files.begin_upload)
    try:
        form = await read_upload(request.headers.get("content-type"), request.stream(),
                                 upload, lambda size: refuse_upload(limits, usage, size))
        if form.jsonl_problem is not None:
            raise UploadRefused(400, f"the file is not a batch input file: "
                                     f"{form.jsonl_problem}", "file")
        added = await asyncio.to_thread(
            files.finish_upload, tenant, upload, purpose=form.purpose, filename=form.filename,
            expires_after_s=form.expires_after_s)
    finally:
        await asyncio.to_thread(upload.discard)  # a no-op once committed
    if isinstance(added, Refused):
        raise UploadRefused.of(added)
    return JSONResponse(added.as_openai())


async def _chunks(content: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(content.read, READ_CHUNK):
            yield chunk
    finally:
        content.close()
