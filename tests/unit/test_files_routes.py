"""The Files API's routes through the gateway app on a real SQLite store, no Ray: each hostile
upload, id and list parameter gets a clear OpenAI-shaped 4xx naming its `param`, a file too
large stops being read at the limit, and nothing refused is left in the storage folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from serving.batch.files.routes import build_files_router
from serving.batch.files.rules import FileLimits
from serving.batch.files.service import Files
from serving.batch.files.storage import FileStorage
from serving.gateway.access import Access
from serving.gateway.app import build_gateway_app
from serving.tenancy import LocalAdmissionCounters
from tests.unit.stores import sqlite_store

LIMITS = FileLimits(max_file_bytes=256 * 1024, max_files=4, max_total_bytes=1024 * 1024)
GOOD = b'{"custom_id": "1", "method": "POST", "url": "/v1/completions", "body": {}}\n'
BOUNDARY = "b0undary"


@pytest.fixture
def platform(tmp_path: Path):
    store = sqlite_store(tmp_path, "acme", "m")
    store.create_tenant("globex")
    keys = {t: store.create_key(t).plaintext for t in ("acme", "globex")}
    access = Access(store, LocalAdmissionCounters())
    files = Files(store, FileStorage(tmp_path / "files"), LIMITS)
    app = build_gateway_app({}, access, routers=(("", build_files_router(access, files)),))
    yield app, keys, files
    store.close()


@pytest.fixture
async def http(platform):
    app, keys, _ = platform
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw",
                                 headers={"authorization": f"Bearer {keys['acme']}"}) as c:
        yield c


def stored(platform) -> list[str]:
    return os.listdir(platform[2].storage.folder)


def form(*parts: tuple[str, bytes, str | None], end: bool = True) -> bytes:
    """A multipart body of (name, value, filename) parts."""
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
                + value + b"\r\n")
    return out + (f"--{BOUNDARY}--\r\n".encode() if end else b"")


MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
PURPOSE = ("purpose", b"batch", None)
FILE = ("file", GOOD, "in.jsonl")


def refused(reply: httpx.Response, status: int, param: str | None) -> str:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and len(error["message"]) < 300
    assert error["param"] == param, error
    return error["message"]


async def test_an_upload_reads_back_byte_for_byte_and_is_listed(http, platform):
    data = '{"custom_id": "ż✓", "body": {"prompt": "hi"}}\r\n{"n": 2}\n'.encode()
    reply = await http.post("/v1/files", files={"file": ("in.jsonl", data)},
                            data={"purpose": "batch"})
    assert reply.status_code == 200, reply.text
    made = reply.json()
    assert made["bytes"] == len(data) and made["filename"] == "in.jsonl"
    assert (await http.get(f"/v1/files/{made['id']}/content")).content == data
    assert (await http.get(f"/v1/files/{made['id']}")).json() == made
    listed = (await http.get("/v1/files")).json()
    assert listed == {"object": "list", "data": [made], "first_id": made["id"],
                      "last_id": made["id"], "has_more": False}
    assert stored(platform) == [made["id"]]


@pytest.mark.parametrize(("body", "headers", "param", "said"), [
    (b'{"purpose": "batch"}', {"content-type": "application/json"}, "file", "multipart"),
    (form(PURPOSE, FILE), {"content-type": "multipart/form-data"}, "file", "multipart"),
    (form(PURPOSE, FILE), {}, "file", "multipart"),
    (b"garbage" * 100, MULTIPART, "file", "not valid multipart"),
    (form(PURPOSE), MULTIPART, "file", "no file given"),
    (form(FILE), MULTIPART, "purpose", "no purpose given"),
    (form(PURPOSE, FILE, FILE), MULTIPART, "file", "given twice"),
    (form(PURPOSE, PURPOSE, FILE), MULTIPART, "purpose", "given twice"),
    (form(PURPOSE, FILE, ("model", b"x", None)), MULTIPART, "model", "unknown field"),
    (form(PURPOSE, ("a\x00b", b"x", None)), MULTIPART, None, "unknown field"),
    (form(("purpose", b"fine-tune", None), FILE), MULTIPART, "purpose", "not served"),
    (form(("purpose", b"x" * 500, None), FILE), MULTIPART, "purpose", "must be 'batch'"),
    (form(("purpose", b"x" * 5000, None), FILE), MULTIPART, "purpose", "longer than"),
    (form(("purpose", b"\xff", None), FILE), MULTIPART, "purpose", "not UTF-8"),
    (form(PURPOSE, FILE, end=False), MULTIPART, "file", "closing boundary"),
    (form(PURPOSE, ("file", GOOD, "x" * 100_000)), MULTIPART, "file", "not valid multipart"),
    (form(PURPOSE, ("file", b"not json\n", "in.jsonl")), MULTIPART, "file", "line 1 is not"),
    (form(PURPOSE, ("file", b"", "in.jsonl")), MULTIPART, "file", "no lines"),
    (form(PURPOSE, ("file", b"\x89PNG\r\n\x1a\n", "in.png")), MULTIPART, "file", "line 1"),
    (form(PURPOSE, FILE, ("expires_after[anchor]", b"created_at", None)), MULTIPART,
     "expires_after[seconds]", "expires_after[seconds]"),
])
async def test_a_hostile_upload_is_a_400_naming_its_param(http, platform, body, headers, param,
                                                          said):
    message = refused(await http.post("/v1/files", content=body, headers=headers), 400, param)
    assert said in message
    assert stored(platform) == []  # nothing of it kept, not even a temporary file


@pytest.mark.parametrize(("filename", "shown"), [
    ("../../../etc/passwd", "../../../etc/passwd"),
    ("a\x01b\x7fc.jsonl", "a\ufffdb\ufffdc.jsonl"),
    ("n" * 3000, "n" * 255),
    ("/abs/path.jsonl", "/abs/path.jsonl"),
])
async def test_a_filename_is_shown_never_used_as_a_path(http, platform, filename, shown):
    reply = await http.post("/v1/files", content=form(PURPOSE, ("file", GOOD, filename)),
                            headers=MULTIPART)
    assert reply.status_code == 200, reply.text
    assert reply.json()["filename"] == shown
    assert stored(platform) == [reply.json()["id"]]


async def asgi_post(app, key: str, chunks: list[bytes], headers: dict[str, str]):
    """POST /v1/files with the body in `chunks`; the status, headers, and how many chunks
    the app asked for."""
    asked = 0

    async def receive():
        nonlocal asked
        asked += 1
        if asked > len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[asked - 1],
                "more_body": asked < len(chunks)}

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    raw = [(k.encode(), v.encode()) for k, v in {
        **headers, "authorization": f"Bearer {key}"}.items()]
    await app({"type": "http", "method": "POST", "path": "/v1/files", "raw_path": b"/v1/files",
               "query_string": b"", "headers": raw, "http_version": "1.1", "scheme": "http",
               "server": ("gw", 80), "client": ("c", 1), "root_path": ""}, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, \
        json.loads(body), asked


async def test_a_file_too_large_stops_being_read_at_the_limit(platform):
    app, keys, _ = platform
    head = form(PURPOSE, end=False) + (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big"\r\n\r\n'
        ).encode()
    chunks = [head] + [b"{}\n" * 21_846] * 1000  # 64 KiB each: 64 MiB offered, 256 KiB taken
    status, headers, body, asked = await asgi_post(app, keys["acme"], chunks, MULTIPART)
    assert status == 413 and body["error"]["code"] == "file_too_large"
    assert body["error"]["param"] == "file" and headers["connection"] == "close"
    assert asked <= 6  # 4 chunks reach the limit: the rest is never read
    assert stored(platform) == []


async def test_a_declared_length_past_the_limit_is_refused_unread(platform):
    app, keys, _ = platform
    status, _, body, asked = await asgi_post(
        app, keys["acme"], [b"x"], {**MULTIPART, "content-length": str(10**12)})
    assert (status, body["error"]["code"], asked) == (413, "file_too_large", 0)


async def test_a_tenant_out_of_room_gets_429_unread_and_told_not_to_retry(http, platform):
    app, keys, _ = platform
    for _ in range(LIMITS.max_files):
        assert (await http.post("/v1/files", content=form(PURPOSE, FILE),
                                headers=MULTIPART)).status_code == 200
    status, headers, body, asked = await asgi_post(app, keys["acme"], [form(PURPOSE, FILE)],
                                                   MULTIPART)
    assert (status, body["error"]["code"], body["error"]["param"]) == (
        429, "insufficient_quota", "file")
    assert headers["x-should-retry"] == "false" and asked == 0
    assert len(stored(platform)) == LIMITS.max_files
    # Another tenant's room is its own.
    other = await http.post("/v1/files", content=form(PURPOSE, FILE), headers={
        **MULTIPART, "authorization": f"Bearer {keys['globex']}"})
    assert other.status_code == 200


async def test_without_a_key_nothing_is_read(platform):
    app, _, _ = platform
    status, _, body, asked = await asgi_post(app, "afk_wrong", [form(PURPOSE, FILE)],
                                             MULTIPART)
    assert (status, body["error"]["code"], asked) == (401, "invalid_api_key", 0)


@pytest.mark.parametrize("file_id", [
    "file-" + "0" * 32, "file-" + "0" * 4000, "file-abc", "%2e%2e", "..%2f..%2fetc",
    "file-../../x", "%00", "file-" + "A" * 32,
])
async def test_ids_not_the_tenants_are_404_for_every_route(http, file_id):
    for method, path in (("GET", f"/v1/files/{file_id}"), ("DELETE", f"/v1/files/{file_id}"),
                         ("GET", f"/v1/files/{file_id}/content")):
        reply = await http.request(method, path)
        assert reply.status_code == 404, (method, path, reply.text)
        assert set(reply.json()["error"]) == {"message", "type", "param", "code"}


async def test_another_tenants_file_is_404_exactly_like_a_missing_one(http, platform):
    _, keys, _ = platform
    made = (await http.post("/v1/files", content=form(PURPOSE, FILE), headers=MULTIPART)).json()
    missing = "file-" + "0" * 32
    globex = {"authorization": f"Bearer {keys['globex']}"}
    for method, suffix in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
        theirs = await http.request(method, f"/v1/files/{made['id']}{suffix}", headers=globex)
        nobodys = await http.request(method, f"/v1/files/{missing}{suffix}", headers=globex)
        assert theirs.status_code == nobodys.status_code == 404
        assert theirs.json()["error"]["message"].replace(made["id"], missing) == \
            nobodys.json()["error"]["message"]
    assert (await http.get("/v1/files", headers=globex)).json()["data"] == []
    assert (await http.get(f"/v1/files/{made['id']}/content")).content == GOOD


@pytest.mark.parametrize(("query", "param"), [
    ("limit=0", "limit"), ("limit=10001", "limit"), ("limit=abc", "limit"),
    ("limit=1&limit=2", "limit"), ("order=sideways", "order"), ("after=..", "after"),
    ("after=file-" + "0" * 33, "after"), ("purpose=%00", "purpose"),
])
async def test_list_parameters_out_of_range_are_400s(http, query, param):
    refused(await http.get(f"/v1/files?{query}"), 400, param)


async def test_pages_walk_the_files_with_the_openai_cursor(http):
    made = []
    for _ in range(3):
        made.append((await http.post("/v1/files", content=form(PURPOSE, FILE),
                                     headers=MULTIPART)).json()["id"])
    first = (await http.get("/v1/files", params={"limit": 2, "order": "asc"})).json()
    assert [f["id"] for f in first["data"]] == sorted(made)[:2] and first["has_more"] is True
    rest = (await http.get("/v1/files", params={"limit": 2, "order": "asc",
                                                "after": first["last_id"]})).json()
    assert [f["id"] for f in rest["data"]] == sorted(made)[2:] and rest["has_more"] is False
    empty = (await http.get("/v1/files", params={"purpose": "batch_output"})).json()
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None,
                     "has_more": False}


async def test_expiry_is_taken_from_openais_fields(http):
    body = form(PURPOSE, FILE, ("expires_after[anchor]", b"created_at", None),
                ("expires_after[seconds]", b"3600", None))
    made = (await http.post("/v1/files", content=body, headers=MULTIPART)).json()
    assert made["expires_at"] == made["created_at"] + 3600
