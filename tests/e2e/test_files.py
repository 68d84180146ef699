"""The Files API end to end with the official `openai` client over HTTP: a batch file
uploaded, listed page by page, retrieved, read back byte for byte, deleted; each tenant's
files its own; the limits and the hostile uploads refused over a real socket; every body
valid against OpenAI's pinned spec."""

from __future__ import annotations

import json
import os
import stat

import httpx
import openai
import pytest

from serving.batch.files import store as file_store
from serving.batch.files.rules import FileLimitOverrides
from tests.conformance.openai_spec import violations
from tests.e2e.conftest import openai_client
from tests.e2e.test_tenancy import new_tenant

LINES = [json.dumps({"custom_id": f"r{n}", "method": "POST", "url": "/v1/chat/completions",
                     "body": {"model": "demo-remote",
                              "messages": [{"role": "user", "content": text}]}},
                    ensure_ascii=False) for n, text in enumerate(("żółć ✓", "hi"))]
DATA = ("\n".join(LINES) + "\n").encode()
BOUNDARY = "e2e-boundary"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def multipart(*parts: tuple[str, bytes, str | None], end: bool = True) -> bytes:
    """A multipart body of (name, value, filename) parts."""
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value
        out += b"\r\n"
    return out + (f"--{BOUNDARY}--\r\n".encode() if end else b"")


def form(data: bytes, filename: str = "in.jsonl", purpose: bytes = b"batch") -> bytes:
    return multipart(("purpose", purpose, None), ("file", data, filename))


def form_head() -> bytes:
    """The start of a form whose file's bytes follow."""
    return multipart(("purpose", b"batch", None), end=False) + (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big"'
        "\r\n\r\n").encode()


@pytest.fixture
def tenant(store):
    """A fresh tenant, its key and an openai client for it (no retries, as everywhere)."""
    return new_tenant(store)


def test_the_openai_client_uploads_lists_reads_and_deletes_a_batch_file(platform, tenant):
    _, key = tenant
    client = openai_client(platform, key)
    made = client.files.create(file=("requests.jsonl", DATA), purpose="batch")
    assert (made.object, made.purpose, made.bytes, made.filename, made.status) == (
        "file", "batch", len(DATA), "requests.jsonl", "processed")
    assert client.files.retrieve(made.id) == made
    assert client.files.content(made.id).content == DATA  # byte for byte
    assert [f.id for f in client.files.list()] == [made.id]
    # Bytes live under the data home, by id, for the platform's user only.
    folder = platform["home"] / "files"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / made.id).stat().st_mode) == 0o600
    assert (folder / made.id).read_bytes() == DATA
    deleted = client.files.delete(made.id)
    assert (deleted.id, deleted.deleted) == (made.id, True)
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(made.id)
    assert not (folder / made.id).exists()
    assert list(client.files.list()) == []


def test_the_client_pages_through_files_with_openais_cursor(platform, tenant):
    _, key = tenant
    client = openai_client(platform, key)
    made = [client.files.create(file=(f"{n}.jsonl", DATA), purpose="batch").id
            for n in range(3)]
    assert [f.id for f in client.files.list(limit=1, order="asc")] == made  # 3 pages
    page = client.files.list(limit=2)
    assert [f.id for f in page.data] == made[:0:-1] and page.has_more
    assert [f.id for f in client.files.list(purpose="batch_output")] == []


def test_bodies_conform_to_openais_spec(platform, tenant):
    _, key = tenant
    headers = {"authorization": f"Bearer {key}"}
    with httpx.Client(base_url=platform["url"], headers=headers, timeout=60) as http:
        made = http.post("/v1/files", files={"file": ("in.jsonl", DATA)},
                         data={"purpose": "batch"})
        assert made.status_code == 200, made.text
        file_id = made.json()["id"]
        bodies = [("OpenAIFile", made.json()),
                  ("OpenAIFile", http.get(f"/v1/files/{file_id}").json()),
                  ("ListFilesResponse", http.get("/v1/files").json()),
                  ("DeleteFileResponse", http.delete(f"/v1/files/{file_id}").json())]
        for status, reply in (
                (400, http.post("/v1/files", json={"purpose": "batch"})),
                (400, http.get("/v1/files", params={"limit": 0})),
                (404, http.get(f"/v1/files/{file_id}")),
                (401, http.get("/v1/files", headers={"authorization": "Bearer afk_nope"}))):
            assert reply.status_code == status, reply.text
            bodies.append(("ErrorResponse", reply.json()))
    broken = [f"{schema}: {v}" for schema, body in bodies for v in violations(schema, body)]
    assert broken == []


def test_another_tenants_file_is_as_missing_as_one_never_made(platform, store, tenant):
    _, key = tenant
    _, other_key = new_tenant(store)
    owner, other = openai_client(platform, key), openai_client(platform, other_key)
    made = owner.files.create(file=("mine.jsonl", DATA), purpose="batch")
    never = "file-" + "0" * 32
    for file_id in (made.id, never):
        for call in (other.files.retrieve, other.files.content, other.files.delete):
            with pytest.raises(openai.NotFoundError) as refused:
                call(file_id)
            assert refused.value.body["message"] == f"No such File object: {file_id}"
    assert list(other.files.list()) == []
    assert owner.files.content(made.id).content == DATA


def test_limits_refuse_over_a_real_socket_and_service_continues(platform, store, tenant):
    name, key = tenant
    file_store.set_limits(store, name, FileLimitOverrides(max_file_bytes=64 * 1024,
                                                          max_files=1))
    headers = {"authorization": f"Bearer {key}", **MULTIPART}

    def chunked(total: int):
        yield form_head()
        for _ in range(total // 65536):
            yield b"{}\n" * 21845 + b"\n"

    with httpx.Client(base_url=platform["url"], timeout=60) as http:
        # Streamed without a length: refused at the limit, not after 64 MiB.
        big = http.post("/v1/files", content=chunked(64 << 20), headers=headers)
        assert big.status_code == 413 and big.json()["error"]["code"] == "file_too_large"
        assert big.json()["error"]["param"] == "file"
        declared = http.post("/v1/files", content=form(b"{}\n" * 30_000), headers=headers)
        assert declared.status_code == 413, declared.text
    client = openai_client(platform, key)
    client.files.create(file=("one.jsonl", DATA), purpose="batch")
    with pytest.raises(openai.RateLimitError) as full:
        openai_client(platform, key).with_options(max_retries=3).files.create(
            file=("two.jsonl", DATA), purpose="batch")
    assert full.value.code == "insufficient_quota" and full.value.param == "file"
    assert full.value.response.headers["x-should-retry"] == "false"
    assert len(list(client.files.list())) == 1
    leftovers = [p for p in os.listdir(platform["home"] / "files") if p.startswith(".upload")]
    assert leftovers == []
    ok = httpx.post(platform["url"] + "/v1/completions", timeout=60,
                    headers={"authorization": f"Bearer {key}"},
                    json={"model": "demo-remote", "prompt": "hi", "max_tokens": 2})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(("body", "param"), [
    (form(b"not json\n"), "file"),
    (form(DATA, purpose=b"fine-tune"), "purpose"),
    (form(DATA, filename="../../../../etc/passwd\x00.jsonl")[:-30], "file"),  # cut short
    (multipart(("purpose", b"batch", None), ("file", DATA, "a"), ("file", DATA, "b")), "file"),
    (multipart(("file", DATA, "a")), "purpose"),
    (b'{"purpose": "batch"}', "file"),  # not multipart at all
])
def test_the_client_sees_openai_errors_for_bad_uploads(platform, tenant, body, param):
    _, key = tenant
    reply = httpx.post(platform["url"] + "/v1/files", content=body, timeout=60,
                       headers={"authorization": f"Bearer {key}", **MULTIPART})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param
