"""The files and batches resources build the calls the platform routes: multipart uploads from
bytes, a path or an open file (sent whole again on a retry), file contents as bytes, batch
bodies and pages, the operators' batch routes, and ids that stay one path segment."""

from __future__ import annotations

import io
import json
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import httpx
import pytest
from aifactory_sdk import UnavailableError
from aifactory_sdk.batch_resources import upload_of
from aifactory_sdk.types import Batch, FileObject, OperatorBatchList

from tests.sdk.test_clients import KINDS, Platform, make, run

FILE = {"id": "file-abc", "object": "file", "bytes": 5, "created_at": 1, "filename": "in.jsonl",
        "purpose": "batch", "status": "processed"}
BATCH = {"id": "batch_1", "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
         "input_file_id": "file-abc", "completion_window": "24h", "status": "in_progress",
         "output_file_id": None, "error_file_id": None, "created_at": 1, "in_progress_at": 1,
         "expires_at": 86401, "finalizing_at": None, "completed_at": None, "failed_at": None,
         "expired_at": None, "cancelling_at": None, "cancelled_at": None,
         "request_counts": {"total": 3, "completed": 1, "failed": 0}, "metadata": {"job": "x"}}
LINES = b'{"custom_id": "a"}\n'


def form_parts(request: httpx.Request) -> dict[str, tuple[str | None, bytes]]:
    """A multipart request's parts: name -> (filename, bytes)."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.content)
    return {part.get_param("name", header="content-disposition"):
            (part.get_filename(), part.get_payload(decode=True))
            for part in message.iter_parts()}


def stop_here() -> httpx.Response:
    return httpx.Response(500, json={"error": {"message": "stop here"}})


@pytest.mark.parametrize(("given", "filename"), [
    (LINES, "upload.jsonl"),
    (("mine.jsonl", LINES), "mine.jsonl"),
    (("mine.jsonl", io.BytesIO(LINES)), "mine.jsonl"),
])
def test_an_upload_is_a_multipart_form_with_the_file_and_its_purpose(given, filename) -> None:
    platform = Platform(httpx.Response(200, json=FILE))
    made = run(make("sync", platform), lambda c: c.files.create(file=given, purpose="batch"))
    assert isinstance(made, FileObject) and made.id == "file-abc"
    [sent] = platform.requests
    assert (sent.method, sent.url.path) == ("POST", "/v1/files")
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert form_parts(sent) == {"file": (filename, LINES), "purpose": (None, b"batch")}


def test_a_path_and_an_open_file_are_sent_under_their_own_names(tmp_path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(LINES)
    assert upload_of(path) == upload_of(str(path))
    assert (upload_of(path).filename, upload_of(path).content) == ("requests.jsonl", LINES)
    with path.open("rb") as opened:
        sent = upload_of(opened)
    assert (sent.filename, sent.content) == ("requests.jsonl", LINES)
    with path.open("r") as text, pytest.raises(TypeError, match="binary mode"):
        upload_of(text)


@pytest.mark.parametrize("kind", KINDS)
def test_a_retried_upload_sends_the_whole_file_again(kind, waits) -> None:
    platform = Platform(httpx.Response(503), httpx.Response(200, json=FILE))
    opened = io.BytesIO(LINES)
    run(make(kind, platform), lambda c: c.files.create(file=opened))
    first, second = platform.requests
    assert form_parts(first)["file"] == form_parts(second)["file"] == ("upload.jsonl", LINES)
    assert len(waits) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_file_content_comes_back_as_the_bytes_sent(kind, waits) -> None:
    raw = b'{"id": 1}\n\xff not even utf-8\n'
    platform = Platform(httpx.Response(200, content=raw,
                                       headers={"content-type": "application/octet-stream"}))
    assert run(make(kind, platform), lambda c: c.files.content("file-abc")) == raw
    assert platform.requests[0].url.path == "/v1/files/file-abc/content"


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_is_typed_with_its_counts(kind, waits) -> None:
    platform = Platform(httpx.Response(200, json=BATCH, headers={"x-request-id": "req-9"}))
    batch = run(make(kind, platform), lambda c: c.batches.create(
        input_file_id="file-abc", endpoint="/v1/chat/completions", metadata={"job": "x"}))
    assert isinstance(batch, Batch) and batch.request_id == "req-9"
    assert (batch.status, batch.request_counts.total, batch.metadata) == (
        "in_progress", 3, {"job": "x"})
    assert json.loads(platform.requests[0].content) == {
        "input_file_id": "file-abc", "endpoint": "/v1/chat/completions",
        "completion_window": "24h", "metadata": {"job": "x"}}


def test_an_operators_page_names_whose_each_batch_is(waits) -> None:
    page = {"object": "list", "data": [{**BATCH, "tenant": "acme", "key_prefix": "afk_12345678"}],
            "first_id": "batch_1", "last_id": "batch_1", "has_more": False}
    listed = run(make("sync", Platform(httpx.Response(200, json=page))),
                 lambda c: c.admin.batches.list(tenant="acme"))
    assert isinstance(listed, OperatorBatchList)
    assert (listed.data[0].tenant, listed.data[0].request_counts.completed) == ("acme", 1)


CALLS: list[tuple[Any, str, str, dict | None]] = [
    (lambda c: c.files.list(after="file-1", limit=2), "GET", "/v1/files?after=file-1&limit=2",
     None),
    (lambda c: c.files.retrieve("file-1"), "GET", "/v1/files/file-1", None),
    (lambda c: c.files.delete("../admin"), "DELETE", "/v1/files/..%2Fadmin", None),
    (lambda c: c.files.content(".."), "GET", "/v1/files/%2E%2E/content", None),
    (lambda c: c.batches.create(input_file_id="file-1", endpoint="/v1/embeddings"), "POST",
     "/v1/batches", {"input_file_id": "file-1", "endpoint": "/v1/embeddings",
                     "completion_window": "24h"}),
    (lambda c: c.batches.list(limit=5), "GET", "/v1/batches?limit=5", None),
    (lambda c: c.batches.retrieve("batch_1/x"), "GET", "/v1/batches/batch_1%2Fx", None),
    (lambda c: c.batches.cancel("batch_1"), "POST", "/v1/batches/batch_1/cancel", None),
    # the operators' view: only the filters given are sent
    (lambda c: c.admin.batches.list(tenant="acme", status="in_progress"), "GET",
     "/admin/v1/batches?status=in_progress&tenant=acme", None),
    (lambda c: c.admin.batches.list(after="batch_2", limit=100), "GET",
     "/admin/v1/batches?after=batch_2&limit=100", None),
    (lambda c: c.admin.batches.retrieve("batch_1"), "GET", "/admin/v1/batches/batch_1", None),
    (lambda c: c.admin.batches.cancel(".."), "POST", "/admin/v1/batches/%2E%2E/cancel", None),
    (lambda c: c.tenant.batches.list(status="cancelled"), "GET",
     "/tenant/v1/batches?status=cancelled", None),
    (lambda c: c.tenant.batches.cancel("batch_1"), "POST", "/tenant/v1/batches/batch_1/cancel",
     None),
]


@pytest.mark.parametrize(("call", "method", "path", "body"), CALLS)
def test_calls_go_where_the_platform_routes_them(waits, call, method, path, body) -> None:
    platform = Platform(stop_here())
    with pytest.raises(UnavailableError, match="stop here"):
        call(make("sync", platform, max_retries=0))
    [sent] = platform.requests
    assert (sent.method, sent.url.raw_path.decode()) == (method, path)
    assert (json.loads(sent.content) if sent.content else None) == body
