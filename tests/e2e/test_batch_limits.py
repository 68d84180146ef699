"""A batch under its tenant's limits, end to end with the official openai client: a
concurrency limit is waited out line by line (every line ends ok, none refused, one ledger
record each); a monthly budget that runs out ends the lines past it with insufficient_quota
in the error file, none lost; batch lines show in the batch metrics and the SLA report's
batch section, never in the tenant's interactive figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from serving.admin import operations
from serving.tenancy import Outcome
from tests.e2e import ray_metrics
from tests.e2e.conftest import openai_client
from tests.e2e.ray_metrics import total
from tests.e2e.test_batches import ENDPOINT, jsonl, request_line, upload, wait_until
from tests.e2e.test_security import wait_for_records
from tests.e2e.test_tenancy import new_tenant

LINES = 6


def test_a_concurrency_limit_is_waited_out_and_counted_apart(platform, store):
    name, key = new_tenant(store, concurrent_requests=1)
    client = openai_client(platform, key)
    since = datetime.now(UTC) - timedelta(seconds=1)
    batch = client.batches.create(
        input_file_id=upload(client, [request_line(f"q{i}") for i in range(LINES)]),
        endpoint=ENDPOINT, completion_window="24h")
    done = wait_until(client, batch.id, {"completed", "failed"})
    assert done.status == "completed", done
    # Before, the lines past the one slot ended 429 in the error file.
    assert (done.request_counts.completed, done.request_counts.failed) == (LINES, 0)
    assert done.error_file_id is None
    assert sorted(x["custom_id"] for x in jsonl(client, done.output_file_id)) == [
        f"q{i}" for i in range(LINES)]
    records = wait_for_records(store, name, since, LINES)
    assert len(records) == LINES and {r.outcome for r in records} == {Outcome.OK}
    assert {r.batch_id for r in records} == {batch.id}

    report = operations.sla_report(store, name, since, datetime.now(UTC) + timedelta(seconds=1))
    assert report.requests == 0 and report.completion_tokens == 0  # nothing interactive
    assert (report.batch.batches, report.batch.lines) == (1, LINES)
    assert report.batch.outcomes["ok"] == LINES and report.batch.completion_tokens == LINES * 4

    def exported(samples) -> bool:
        return total(samples, "ray_aifactory_batch_lines_total", tenant=name) >= LINES

    samples = ray_metrics.wait_for(exported)
    assert total(samples, "ray_aifactory_batch_lines_total", tenant=name, outcome="ok") == LINES
    assert total(samples, "ray_aifactory_batch_completion_tokens_total", tenant=name) == (
        LINES * 4)
    assert total(samples, "ray_aifactory_requests_total", tenant=name) == 0
    assert total(samples, "ray_aifactory_completion_tokens_total", tenant=name) == 0


def test_a_spent_budget_ends_the_lines_past_it_with_insufficient_quota(platform, store):
    # Each line reserves its prompt plus max_tokens 4: a budget of 40 tokens runs out early.
    name, key = new_tenant(store, tokens_per_month=40, concurrent_requests=1)
    client = openai_client(platform, key)
    since = datetime.now(UTC) - timedelta(seconds=1)
    batch = client.batches.create(
        input_file_id=upload(client, [request_line(f"b{i}") for i in range(LINES)]),
        endpoint=ENDPOINT, completion_window="24h")
    done = wait_until(client, batch.id, {"completed", "failed"})
    assert done.status == "completed", done
    output, errors = jsonl(client, done.output_file_id), jsonl(client, done.error_file_id)
    assert 1 <= len(output) < LINES and len(output) + len(errors) == LINES
    assert sorted(x["custom_id"] for x in output + errors) == [f"b{i}" for i in range(LINES)]
    for item in errors:
        assert item["response"]["status_code"] == 429
        assert item["response"]["body"]["error"]["code"] == "insufficient_quota"
    records = wait_for_records(store, name, since, LINES)
    assert sorted(r.outcome.value for r in records) == sorted(
        ["ok"] * len(output) + ["rejected"] * len(errors))
    assert sum(r.total_tokens for r in records) == sum(
        x["response"]["body"]["usage"]["total_tokens"] for x in output)


def test_a_client_cannot_set_the_engines_scheduling_priority(platform, auth):
    """The engines schedule by the platform's priority (batch lines after interactive
    requests); a client's own would jump every other tenant's queue."""
    for path, body in (("/v1/completions", {"prompt": "hi"}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})):
        reply = httpx.post(platform["url"] + path, headers=auth, timeout=60, json={
            "model": "demo-remote", "max_tokens": 2, "priority": -10, **body})
        assert reply.status_code == 400 and reply.json()["error"]["param"] == "priority"
    ok = httpx.post(platform["url"] + "/v1/completions", headers=auth, timeout=60, json={
        "model": "demo-remote", "prompt": "hi", "max_tokens": 2, "priority": 0})
    assert ok.status_code == 200, ok.text
