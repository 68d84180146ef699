"""The Batch API's routes, OpenAI's shapes: POST /v1/batches (its input checked before any
token is spent: a batch with bad lines is `failed` at once with its errors), GET
/v1/batches, GET /v1/batches/{batch_id}, POST /v1/batches/{batch_id}/cancel. Each
authenticates first and acts for the key's tenant only: another tenant's batch or input file
answers exactly as a missing one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from serving.batch import batch_store as batches
from serving.batch.batch_input import BATCH_ENDPOINTS, check_input
from serving.batch.files.protocol import SECURED
from serving.batch.files.rules import is_file_id, shown
from serving.batch.files.service import Files
from serving.batch.lifecycle import BatchStatus, cannot_cancel
from serving.batch.protocol import (
    CREATE_BODY,
    LIST_LIMIT,
    LIST_PARAMETERS,
    BatchList,
    BatchObject,
    errors,
    listed,
)
from serving.batch.worker import BatchWorker
from serving.gateway.batch_line import GatewayLines
from serving.gateway.errors import error_response
from serving.gateway.exchange import Refusal, store_unavailable
from serving.gateway.pipeline import Gateway, authenticate, for_caller, read_body
from serving.gateway.shape import bad_shape
from serving.tenancy import Principal

CREATE_FIELDS = {"input_file_id", "endpoint", "completion_window", "metadata",
                 "output_expires_after"}
MAX_METADATA = (16, 64, 512)  # OpenAI's: pairs, key characters, value characters


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


def create_problem(body: dict[str, Any]) -> BadRequest | None:
    """What is wrong with a create body's own fields (the input file is read after)."""
    unknown = sorted(set(body) - CREATE_FIELDS)
    if unknown:
        return BadRequest(f"unknown parameter {shown(unknown[0])}", unknown[0][:64])
    if not is_file_id(body.get("input_file_id")):
        return BadRequest("input_file_id must be the id of a file you uploaded "
                          "(file-...)", "input_file_id")
    if body.get("endpoint") not in BATCH_ENDPOINTS:
        return BadRequest(f"endpoint must be one of {', '.join(BATCH_ENDPOINTS)}", "endpoint")
    if body.get("completion_window") != "24h":
        return BadRequest("completion_window must be '24h'", "completion_window")
    metadata = body.get("metadata")
    pairs, key_chars, value_chars = MAX_METADATA
    if metadata is not None and not (
            isinstance(metadata, dict) and len(metadata) <= pairs
            and all(isinstance(k, str) and len(k) <= key_chars and isinstance(v, str)
                    and len(v) <= value_chars for k, v in metadata.items())):
        return BadRequest(f"metadata must be at most {pairs} string pairs, keys up to "
                          f"{key_chars} and values up to {value_chars} characters", "metadata")
    return None


def list_limit(given: str | None) -> int | BadRequest:
    least, most, default = LIST_LIMIT
    if given is None:
        return default
    if not given.isdigit() or not least <= int(given) <= most:
        return BadRequest(f"limit must be a whole number from {least} to {most}", "limit")
    return int(given)


def build_batch_router(gateway: Gateway, files: Files) -> APIRouter:
    router = APIRouter()
    store = gateway.access.store

    def shown_batch(batch: batches.Batch) -> dict[str, Any]:
        _, completed, failed = batches.counts(store, batch.id)
        return batch.as_json(completed, failed)

    def not_found(batch_id: str) -> Response:
        return error_response(404, f"No batch found with id {shown(batch_id)}.",
                              param="batch_id", code="batch_not_found")

    def create(caller: Principal, body: dict[str, Any], models: set[str]) -> Response:
        file_id = body["input_file_id"]
        record = files.get(caller.tenant, file_id)
        if record is None:
            return error_response(404, f"No file found with id '{file_id}'.",
                                  param="input_file_id", code="file_not_found")
        if record.purpose != "batch":
            return error_response(400, f"file '{file_id}' was not uploaded with purpose "
                                       "'batch'", param="input_file_id")
        content = files.read(caller.tenant, file_id)
        try:
            text = (content or b"").decode("utf-8")
        except UnicodeDecodeError:
            return error_response(400, "the input file is not UTF-8 text",
                                  param="input_file_id")

        def body_problem(line_body: dict[str, Any]) -> tuple[str, str | None] | None:
            bad = bad_shape(line_body, gateway.limits)
            return None if bad is None else (bad.message, bad.param)

        checked = check_input(text, body["endpoint"], models, body_problem)
        batch = batches.create(store, tenant=caller.tenant, key_prefix=caller.key_prefix,
                               endpoint=body["endpoint"], input_file_id=file_id,
                               lines=checked.lines, errors=checked.errors,
                               metadata=body.get("metadata"))
        return JSONResponse(shown_batch(batch))

    @router.post("/v1/batches", openapi_extra=CREATE_BODY, responses={
        200: {"model": BatchObject}, **errors(400, 401, 403, 404, 413, 503)})
    async def create_batch(request: Request) -> Response:
        try:
            caller = await authenticate(gateway.access, request)
            body = await read_body(request)
            problem = create_problem(body)
            if problem is not None:
                return error_response(400, str(problem), param=problem.param)
            try:
                models = await gateway.access.visible_endpoints(caller)
                models = {m for m in models if m in gateway.endpoints}
                return await asyncio.to_thread(create, caller, body, models)
            except Exception as exc:
                raise store_unavailable(exc) from None
        except Refusal as refusal:
            return refusal.response

    @router.get("/v1/batches", openapi_extra=LIST_PARAMETERS,
                responses={200: {"model": BatchList}, **errors(400, 401, 403, 503)})
    async def list_batches(request: Request) -> Response:
        try:
            caller = await authenticate(gateway.access, request)
            limit = list_limit(request.query_params.get("limit"))
            if isinstance(limit, BadRequest):
                return error_response(400, str(limit), param=limit.param)
            after = request.query_params.get("after")

            def page() -> dict[str, Any]:
                found, more = batches.page(store, caller.tenant, after=after, limit=limit)
                return listed([shown_batch(b) for b in found], more)

            try:
                return JSONResponse(await asyncio.to_thread(page))
            except Exception as exc:
                raise store_unavailable(exc) from None
        except Refusal as refusal:
            return refusal.response

    @router.get("/v1/batches/{batch_id:path}", openapi_extra=SECURED,
                responses={200: {"model": BatchObject}, **errors(401, 403, 404, 503)})
    async def retrieve_batch(batch_id: str, request: Request) -> Response:
        def read(caller: Principal) -> dict[str, Any] | None:
            found = batches.find(store, caller.tenant, batch_id)
            return None if found is None else shown_batch(found)

        try:
            found = await for_caller(gateway.access, request,
                                     lambda caller: asyncio.to_thread(read, caller))
        except Refusal as refusal:
            return refusal.response
        return not_found(batch_id) if found is None else JSONResponse(found)

    @router.post("/v1/batches/{batch_id}/cancel", openapi_extra=SECURED,
                 responses={200: {"model": BatchObject}, **errors(400, 401, 403, 404, 503)})
    async def cancel_batch(batch_id: str, request: Request) -> Response:
        def cancel(caller: Principal) -> tuple[Any, dict[str, Any] | None]:
            after = batches.cancel(store, caller.tenant, batch_id)
            return after, shown_batch(after) if isinstance(after, batches.Batch) else None

        try:
            after, shown_after = await for_caller(
                gateway.access, request, lambda caller: asyncio.to_thread(cancel, caller))
        except Refusal as refusal:
            return refusal.response
        if after is None:
            return not_found(batch_id)
        if isinstance(after, BatchStatus):
            return error_response(400, cannot_cancel(after), param="batch_id")
        return JSONResponse(shown_after)

    return router




def batch_api(files: Files) -> Callable[[Gateway], tuple[APIRouter, BatchWorker]]:
    """The Batch API as a part of a gateway replica's app: its routes, and the worker that
    runs batches' lines through that replica's gateway."""

    def attach(gateway: Gateway) -> tuple[APIRouter, BatchWorker]:
        lines = GatewayLines(gateway)
        worker = BatchWorker(gateway.access.store, files, lines.run, lines.room,
                             owner=gateway.replica or uuid.uuid4().hex)
        return build_batch_router(gateway, files), worker

    return attach
