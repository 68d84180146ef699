"""The Files API's store and storage folder on the real store (SQLite and PostgreSQL): a file
found by its own tenant only, pages in creation order with OpenAI's cursor, limits held in
the same transaction as the insert (also under concurrent uploads), expiry, and bytes that
are written whole, kept under the id only, and gone with their file."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from serving.batch.files import store as meta
from serving.batch.files.rules import FileLimitOverrides, FileLimits, ListQuery, Refused
from serving.batch.files.service import Files
from serving.batch.files.storage import FileStorage
from serving.tenancy import NotFound

LIMITS = FileLimits(max_file_bytes=1000, max_files=3, max_total_bytes=2500)


@pytest.fixture
def files(store, tmp_path: Path) -> Files:
    store.create_tenant("acme")
    store.create_tenant("globex")
    return Files(store, FileStorage(tmp_path / "files"), LIMITS)


def upload(files: Files, tenant: str, data: bytes, name: str = "in.jsonl", **kwargs):
    pending = files.begin_upload()
    pending.write(data)
    try:
        return files.finish_upload(tenant, pending, purpose="batch", filename=name, **kwargs)
    finally:
        pending.discard()


def test_a_file_is_its_tenants_alone(files, clock):
    made = upload(files, "acme", b'{"a": 1}\n', name="../../etc/passwd\x00")
    assert made.as_openai() == {
        "id": made.id, "object": "file", "bytes": 9, "created_at": int(clock.now.timestamp()),
        "filename": "../../etc/passwd\ufffd", "purpose": "batch", "status": "processed"}
    assert files.get("acme", made.id) == made
    assert files.read("acme", made.id) == b'{"a": 1}\n'
    # Another tenant's id is missing, for every operation.
    assert files.get("globex", made.id) is None and files.open("globex", made.id) is None
    assert files.read("globex", made.id) is None
    assert files.list("globex", ListQuery()) == ([], False)
    assert files.delete("globex", made.id) is False
    assert files.read("acme", made.id) == b'{"a": 1}\n'
    for bad in ("..", "../" + made.id, made.id + "/", made.id.upper(), "x" * 10_000):
        assert files.get("acme", bad) is None and files.delete("acme", bad) is False


def test_bytes_live_under_the_id_only_readable_by_the_platform(files):
    made = upload(files, "acme", b"{}\n", name="../escape.jsonl")
    folder = files.storage.folder
    assert sorted(os.listdir(folder)) == [made.id]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / made.id).stat().st_mode) == 0o600
    assert not (folder.parent / "escape.jsonl").exists()
    assert files.delete("acme", made.id) is True
    assert os.listdir(folder) == [] and files.get("acme", made.id) is None
    assert files.delete("acme", made.id) is False


def test_an_open_file_stays_readable_when_deleted_meanwhile(files):
    made = upload(files, "acme", b'{"x": 1}\n')
    _, content = files.open("acme", made.id)
    assert files.delete("acme", made.id)
    with content:
        assert content.read() == b'{"x": 1}\n'


def test_pages_follow_creation_with_openais_cursor(files, clock):
    made = []
    for n in range(3):
        made.append(upload(files, "acme", b"{}\n", name=f"{n}.jsonl").id)
        clock.advance(seconds=1)
    upload(files, "globex", b"{}\n")

    def ids(query: ListQuery) -> list[str]:
        return [f.id for f in files.list("acme", query)[0]]

    assert ids(ListQuery()) == made[::-1]  # newest first by default
    assert ids(ListQuery(order="asc")) == made
    assert files.list("acme", ListQuery(limit=2)) == (
        [files.get("acme", made[2]), files.get("acme", made[1])], True)
    assert ids(ListQuery(after=made[1], limit=2)) == [made[0]]
    assert ids(ListQuery(after=made[0], order="asc")) == made[1:]
    assert files.list("acme", ListQuery(after=made[1], order="asc", limit=1))[1] is False
    # A cursor whose file is gone still marks a place.
    files.delete("acme", made[1])
    assert ids(ListQuery(after=made[1], order="asc")) == [made[2]]
    assert ids(ListQuery(purpose="batch_output")) == []
    out = files.write("acme", "batch_1_output.jsonl", b'{"id": 1}\n')
    assert ids(ListQuery(purpose="batch_output")) == [out]


def test_limits_count_files_and_bytes_per_tenant(files):
    for _ in range(2):
        assert not isinstance(upload(files, "acme", b"x" * 1000), Refused)
    total = upload(files, "acme", b"x" * 501)  # 2000 + 501 > 2500
    assert isinstance(total, Refused) and (total.status, total.code) == (429,
                                                                         "insufficient_quota")
    assert not isinstance(upload(files, "acme", b"x" * 500), Refused)
    count = upload(files, "acme", b"x")
    assert isinstance(count, Refused) and "its limit is 3" in count.message
    assert files.limits_and_usage("acme")[1] == meta.FileUsage(3, 2500)
    # Refused bytes are not kept; another tenant's room is its own.
    assert len(os.listdir(files.storage.folder)) == 3
    assert not isinstance(upload(files, "globex", b"x" * 1000), Refused)
    # A batch's output is never refused, though it takes room.
    out = files.write("acme", "out.jsonl", b"y" * 5000)
    assert files.read("acme", out) == b"y" * 5000
    assert files.limits_and_usage("acme")[1] == meta.FileUsage(4, 7500)


def test_a_tenants_own_limits_over_the_platforms(files, store):
    meta.set_limits(store, "acme", FileLimitOverrides(max_files=1, max_file_bytes=10))
    assert meta.get_limits(store, "acme") == FileLimitOverrides(max_files=1,
                                                                max_file_bytes=10)
    limits, _ = files.limits_and_usage("acme")
    assert limits == FileLimits(max_file_bytes=10, max_files=1, max_total_bytes=2500)
    assert files.limits_and_usage("globex")[0] == LIMITS
    assert upload(files, "acme", b"x" * 11).status == 413
    upload(files, "acme", b"x")
    assert upload(files, "acme", b"x").status == 429
    meta.set_limits(store, "acme", FileLimitOverrides())  # back to the platform's
    assert files.limits_and_usage("acme")[0] == LIMITS
    with pytest.raises(NotFound):
        meta.set_limits(store, "nobody", FileLimitOverrides(max_files=1))


def test_concurrent_uploads_cannot_both_take_the_last_room(files):
    results: list = []
    barrier = threading.Barrier(6)

    def one() -> None:
        pending = files.begin_upload()
        pending.write(b"z" * 10)
        barrier.wait()
        results.append(files.finish_upload("acme", pending, purpose="batch", filename="c"))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kept = [r for r in results if not isinstance(r, Refused)]
    assert len(results) == 6 and len(kept) == LIMITS.max_files
    assert files.limits_and_usage("acme")[1] == meta.FileUsage(3, 30)
    assert sorted(os.listdir(files.storage.folder)) == sorted(r.id for r in kept)


def test_a_file_expires_as_openais_expires_after_says(files, clock):
    made = upload(files, "acme", b"{}\n", expires_after_s=3600)
    kept = upload(files, "acme", b"{}\n")
    assert made.as_openai()["expires_at"] == int(clock.now.timestamp()) + 3600
    assert "expires_at" not in kept.as_openai()
    clock.advance(seconds=3600)
    assert files.get("acme", made.id) is None and files.open("acme", made.id) is None
    assert [f.id for f in files.list("acme", ListQuery())[0]] == [kept.id]
    assert files.limits_and_usage("acme")[1] == meta.FileUsage(1, 3)
    assert files.delete("acme", made.id) is False
    upload(files, "acme", b"{}\n")  # an upload purges what expired, bytes too
    assert made.id not in os.listdir(files.storage.folder)


def test_an_uploads_leftovers_are_swept(files, tmp_path):
    pending = files.begin_upload()
    pending.write(b"half")
    leftovers = [p for p in os.listdir(files.storage.folder) if p.startswith(".upload-")]
    assert len(leftovers) == 1
    assert files.storage.sweep_uploads() == 0  # a live upload is young
    assert files.storage.sweep_uploads(now=float("inf")) == 1
    assert os.listdir(files.storage.folder) == []
