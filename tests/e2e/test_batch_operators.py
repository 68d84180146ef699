"""Batch jobs through the platform's own SDK and CLI, against the live platform: the SDK
uploads a batch file, runs a batch to its end, reads the output and deletes the files; an
operator lists every tenant's batches and cancels any with `aifactory batch`; a tenant's
admin-scoped key sees and cancels its own only; the new routes refuse hostile ids and
queries with OpenAI-shaped 4xx."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from aifactory_sdk import (
    AsyncClient,
    BadRequestError,
    Client,
    NotFoundError,
    PermissionDeniedError,
)

from tests.e2e.conftest import ADMIN_KEY, aifactory
from tests.e2e.test_batches import ENDPOINT, request_line
from tests.e2e.test_tenancy import new_tenant


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def sdk(platform, key: str) -> Client:
    return Client(api_key=key, base_url=platform["url"], max_retries=0)


def wait_until(client: Client, batch_id: str, statuses: set[str], timeout_s: float = 240):
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses or time.monotonic() > deadline:
            return batch
        time.sleep(0.5)


def submit(client: Client, lines: list[dict]):
    made = client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    return client.batches.create(input_file_id=made.id, endpoint=ENDPOINT)


def bad_batch(client: Client):
    """A batch failed in validation (a duplicate custom_id): it exists, and costs nothing."""
    return submit(client, [request_line("a"), request_line("a")])


@pytest.fixture(scope="module")
def admin(platform) -> Client:
    return sdk(platform, ADMIN_KEY)


@pytest.fixture(scope="module")
def two_tenants(platform, store) -> dict[str, tuple[str, Client]]:
    found = {}
    for label in ("a", "b"):
        name, key = new_tenant(store)
        found[label] = (name, sdk(platform, key))
    return found


def test_the_sdk_runs_a_batch_and_reads_its_output(platform, store, tmp_path):
    _, key = new_tenant(store)
    client = sdk(platform, key)
    path = tmp_path / "requests.jsonl"
    path.write_bytes(jsonl([request_line(f"q{i}") for i in range(3)]))
    uploaded = client.files.create(file=path, purpose="batch")
    assert (uploaded.filename, uploaded.bytes, uploaded.purpose) == (
        "requests.jsonl", path.stat().st_size, "batch")
    assert client.files.content(uploaded.id) == path.read_bytes()
    assert uploaded.id in [f.id for f in client.files.list(limit=10).data]

    batch = client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT,
                                  metadata={"job": "sdk"})
    assert batch.status == "in_progress" and batch.request_counts.total == 3
    assert batch.request_id is not None
    done = wait_until(client, batch.id, {"completed", "failed"})
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (3, 0)
    assert done.metadata == {"job": "sdk"} and done.error_file_id is None
    output = [json.loads(x) for x in client.files.content(done.output_file_id).splitlines()]
    assert sorted(x["custom_id"] for x in output) == ["q0", "q1", "q2"]
    assert all(x["response"]["status_code"] == 200 for x in output)
    assert batch.id in [b.id for b in client.batches.list(limit=100).data]

    async def listed_async() -> list[str]:
        async with AsyncClient(api_key=key, base_url=platform["url"]) as async_client:
            return [b.id for b in (await async_client.batches.list()).data]

    assert batch.id in asyncio.run(listed_async())
    for file_id in (uploaded.id, done.output_file_id):
        assert client.files.delete(file_id).deleted is True
        with pytest.raises(NotFoundError):
            client.files.retrieve(file_id)
    with pytest.raises(BadRequestError):  # finished: nothing to cancel
        client.batches.cancel(batch.id)


def test_an_operator_lists_every_tenants_batches(admin, two_tenants):
    (a, a_client), (b, b_client) = two_tenants["a"], two_tenants["b"]
    mine, theirs = bad_batch(a_client), bad_batch(b_client)
    everyone = [x.id for x in admin.admin.batches.list(limit=100).data]
    assert mine.id in everyone and theirs.id in everyone
    only_a = {x.id: x for x in admin.admin.batches.list(tenant=a, limit=100).data}
    assert mine.id in only_a and theirs.id not in only_a
    assert {x.tenant for x in only_a.values()} == {a}
    assert only_a[mine.id].status == "failed"
    assert only_a[mine.id].errors.data[0].code == "duplicate_custom_id"
    assert theirs.id in [x.id for x in admin.admin.batches.list(status="failed", limit=100).data]
    assert admin.admin.batches.list(tenant=b, status="completed").data == []
    assert admin.admin.batches.retrieve(theirs.id).tenant == b
    with pytest.raises(NotFoundError):
        admin.admin.batches.list(tenant="t-nobody-at-all")


def test_a_tenants_admin_key_sees_and_cancels_its_own_only(platform, store, admin,
                                                           two_tenants):
    (a, a_client), (_, b_client) = two_tenants["a"], two_tenants["b"]
    theirs = submit(b_client, [request_line(f"b{i}", max_tokens=16) for i in range(30)])
    a_admin = sdk(platform, store.create_key(a, scope="admin").plaintext)
    seen = a_admin.tenant.batches.list(limit=100).data
    assert seen and {x.tenant for x in seen} == {a}
    for call in (lambda: a_admin.tenant.batches.retrieve(theirs.id),
                 lambda: a_admin.tenant.batches.cancel(theirs.id)):
        with pytest.raises(NotFoundError):
            call()
    assert b_client.batches.retrieve(theirs.id).status in ("in_progress", "finalizing",
                                                           "completed")
    with pytest.raises(PermissionDeniedError):  # the admin API is the platform's
        a_admin.admin.batches.list()
    mine = submit(a_client, [request_line(f"a{i}", max_tokens=16) for i in range(30)])
    assert a_admin.tenant.batches.cancel(mine.id).status in ("cancelling", "cancelled")
    assert wait_until(a_client, mine.id, {"cancelled"}).status == "cancelled"
    assert admin.admin.audit(tenant=a).data[-1].action == "batch.cancel"


def test_an_operator_cancels_a_tenants_batch_with_the_cli(platform, two_tenants):
    b, b_client = two_tenants["b"]
    # Long enough that it is still running when the CLI (a fresh Python process) cancels it.
    lines = [request_line(f"c{i}", max_tokens=64) for i in range(200)]
    running = submit(b_client, lines)
    cancelled = aifactory("batch", "cancel", running.id, "--json", env=platform["env"],
                          timeout=120)
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] in ("cancelling", "cancelled")
    listed = aifactory("batch", "list", "--tenant", b, env=platform["env"], timeout=120)
    assert listed.returncode == 0, listed.stderr
    [row] = [line.split() for line in listed.stdout.splitlines() if running.id in line]
    assert row[1:3] in ([b, "cancelling"], [b, "cancelled"])
    done = wait_until(b_client, running.id, {"cancelled"})
    assert done.status == "cancelled"
    seen = [json.loads(x)["custom_id"] for file_id in (done.output_file_id, done.error_file_id)
            if file_id for x in b_client.files.content(file_id).splitlines()]
    assert sorted(seen) == sorted(x["custom_id"] for x in lines)  # each once, none lost
    again = aifactory("batch", "cancel", running.id, env=platform["env"], timeout=120)
    assert again.returncode == 2 and "cannot be cancelled" in again.stderr


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/admin/v1/batches/batch_nope", 404),
    ("GET", "/admin/v1/batches/batch_" + "0" * 32, 404),
    ("GET", "/admin/v1/batches/%2E%2E", 404),
    ("GET", "/admin/v1/batches/..%2F..%2Ftenants", 404),
    ("GET", "/admin/v1/batches/" + "b" * 5000, 404),
    ("POST", "/admin/v1/batches/" + "b" * 5000 + "/cancel", 404),
    ("POST", "/admin/v1/batches/..%2Fbatch_x/cancel", 404),
    ("POST", "/tenant/v1/batches/%2E%2E/cancel", 404),
    ("GET", "/admin/v1/batches?limit=0", 400),
    ("GET", "/admin/v1/batches?limit=101", 400),
    ("GET", "/admin/v1/batches?limit=-1", 400),
    ("GET", "/admin/v1/batches?status=bogus", 400),
    ("GET", "/admin/v1/batches?after=..%2F..%2Fx", 400),
    ("GET", "/admin/v1/batches?tenant=..%2Fadmin", 400),
    ("GET", "/admin/v1/batches?tenant=" + "t" * 5000, 400),
    ("GET", "/tenant/v1/batches?limit=1000", 400),
])
def test_hostile_ids_and_queries_on_the_operator_routes_are_4xx(platform, method, path, status):
    reply = httpx.request(method, platform["url"] + path, timeout=30,
                          headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert reply.status_code == status, reply.text[:300]
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and len(error["message"]) < 400
