"""Batch jobs end to end with the official openai client: a JSONL file uploaded, a batch
created from it, run by the gateway's worker through the same steps as live requests, its
output and error files downloaded in OpenAI's format, one ledger record per line; a batch
with bad lines failed before any token is spent; a cancel; another tenant's batch a 404."""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from tests.e2e.conftest import openai_client
from tests.e2e.test_security import wait_for_records
from tests.e2e.test_tenancy import new_tenant

ENDPOINT = "/v1/chat/completions"


def request_line(custom_id: str, model: str = "demo-remote", **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT,
            "body": {"model": model, "messages": [{"role": "user", "content": "Hi"}],
                     "max_tokens": 4, "ignore_eos": True, **body}}


def upload(client: openai.OpenAI, lines: list[dict]) -> str:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return client.files.create(file=("input.jsonl", io.BytesIO(data)), purpose="batch").id


def wait_until(client: openai.OpenAI, batch_id: str, statuses: set[str],
               timeout_s: float = 240) -> openai.types.Batch:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses or time.monotonic() > deadline:
            return batch
        time.sleep(0.5)


def jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).content.splitlines()]


@pytest.fixture(scope="module")
def tenant(platform, store):
    name, key = new_tenant(store)
    return name, openai_client(platform, key)


def test_a_batch_runs_every_line_once_and_writes_openais_files(tenant, store):
    name, client = tenant
    since = datetime.now(UTC) - timedelta(seconds=1)
    lines = [request_line(f"q{i}") for i in range(6)]
    lines.append(request_line("refused", temperature=-1))  # vLLM refuses it: a 400
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint=ENDPOINT,
                                  completion_window="24h", metadata={"job": "e2e"})
    assert batch.status == "in_progress" and batch.request_counts.total == 7
    done = wait_until(client, batch.id, {"completed", "failed"})
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (6, 1)
    assert done.metadata == {"job": "e2e"} and done.completed_at >= done.created_at

    output, errors = jsonl(client, done.output_file_id), jsonl(client, done.error_file_id)
    assert sorted(x["custom_id"] for x in output) == [f"q{i}" for i in range(6)]
    for item in output:
        reply = item["response"]
        assert reply["status_code"] == 200 and item["error"] is None
        assert reply["body"]["object"] == "chat.completion"
        assert reply["body"]["usage"]["completion_tokens"] == 4
    [refused] = errors
    assert refused["custom_id"] == "refused" and refused["response"]["status_code"] == 400
    assert "error" in refused["response"]["body"]

    # One ledger record per line, keyed by the batch's id and the line, the custom_id beside.
    records = wait_for_records(store, name, since, 7)
    assert len(records) == 7 and all(r.request_id.startswith(batch.id) for r in records)
    assert sorted(r.client_request_id for r in records) == sorted(
        [f"q{i}" for i in range(6)] + ["refused"])
    assert sum(r.completion_tokens for r in records) == 6 * 4
    assert {x["response"]["request_id"] for x in output} <= {r.request_id for r in records}


def test_a_batch_with_bad_lines_fails_before_any_token_is_spent(tenant, store):
    name, client = tenant
    since = datetime.now(UTC)
    lines = [request_line("a"), request_line("a"), request_line("b", model="globex-only"),
             {"custom_id": "c", "method": "POST", "url": "/v1/completions", "body": {}}]
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint=ENDPOINT,
                                  completion_window="24h")
    assert batch.status == "failed" and batch.failed_at is not None
    assert [(e.code, e.line) for e in batch.errors.data] == [
        ("duplicate_custom_id", 2), ("model_not_found", 3), ("mismatched_url", 4)]
    time.sleep(1)
    assert store.usage_records(name, since, datetime.now(UTC)) == []


def test_a_cancelled_batch_ends_with_every_line_accounted_for(tenant):
    _, client = tenant
    lines = [request_line(f"c{i}", max_tokens=16) for i in range(40)]
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint=ENDPOINT,
                                  completion_window="24h")
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = wait_until(client, batch.id, {"cancelled"})
    assert done.status == "cancelled" and done.cancelled_at is not None
    output, errors = jsonl(client, done.output_file_id), jsonl(client, done.error_file_id)
    seen = [x["custom_id"] for x in output + errors]
    assert sorted(seen) == sorted(f"c{i}" for i in range(40))  # each once
    assert any(x["error"] and x["error"]["code"] == "batch_cancelled" for x in errors)
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(batch.id)


def test_batches_are_their_tenants_alone(platform, tenant, keys):
    _, client = tenant
    mine = client.batches.create(input_file_id=upload(client, [request_line("x")]),
                                 endpoint=ENDPOINT, completion_window="24h")
    other = openai_client(platform, keys["globex"])
    for call in (lambda: other.batches.retrieve(mine.id), lambda: other.batches.cancel(mine.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert mine.id not in [b.id for b in other.batches.list()]
    assert mine.id in [b.id for b in client.batches.list(limit=100)]
    with pytest.raises(openai.NotFoundError):  # another tenant's input file
        other.batches.create(input_file_id=mine.input_file_id, endpoint=ENDPOINT,
                             completion_window="24h")


@pytest.mark.parametrize(("body", "param"), [
    ({"input_file_id": "file-nope", "endpoint": ENDPOINT, "completion_window": "24h"},
     "input_file_id"),
    ({"input_file_id": "file-" + "0" * 32, "endpoint": "/v1/images", "completion_window": "24h"},
     "endpoint"),
    ({"input_file_id": "file-" + "0" * 32, "endpoint": ENDPOINT, "completion_window": "1h"},
     "completion_window"),
    ({"input_file_id": "file-" + "0" * 32, "endpoint": ENDPOINT, "completion_window": "24h",
      "metadata": {"k" * 65: "v"}}, "metadata"),
    ({"input_file_id": "file-" + "0" * 32, "endpoint": ENDPOINT, "completion_window": "24h",
      "priority": 1}, "priority"),
])
def test_bad_create_bodies_are_openai_shaped_400s(platform, auth, body, param):
    resp = httpx.post(platform["url"] + "/v1/batches", json=body, headers=auth, timeout=30)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == param


@pytest.mark.parametrize("path", ["/v1/batches/batch_nope", "/v1/batches/..%2F..%2Fadmin",
                                  "/v1/batches/" + "b" * 5000])
def test_unknown_batch_ids_are_404(platform, auth, path):
    resp = httpx.get(platform["url"] + path, headers=auth, timeout=30)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "batch_not_found"


def test_list_limits_are_checked(platform, auth):
    for limit in ("0", "101", "x"):
        resp = httpx.get(platform["url"] + "/v1/batches", params={"limit": limit},
                         headers=auth, timeout=30)
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "limit"


@pytest.mark.parametrize(("raw", "status"), [
    (b'{"input_file_id": "file-x", "endpoint": ', 400),  # cut short
    (b'["input_file_id", "file-x"]', 400),  # not an object
    (b'{"metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),  # past the parser
    (b'{"input_file_id": "' + b"f" * 100_000 + b'", "endpoint": "/v1/completions", '
     b'"completion_window": "24h"}', 400),
    (b'{"input_file_id": "' + b"a" * (9 << 20) + b'"}', 413),
])
def test_hostile_batch_bodies_are_openai_shaped_4xx(platform, auth, raw, status):
    reply = httpx.post(platform["url"] + "/v1/batches", content=raw, timeout=60,
                       headers={**auth, "content-type": "application/json"})
    assert reply.status_code == status, reply.text[:300]
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and len(error["message"]) < 400
