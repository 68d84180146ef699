"""A batch running when an engine replica is killed (test_prometheus's engine restart): what
it starts before the kill and what it checks after."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from serving.tenancy import Outcome
from tests.e2e.conftest import openai_client
from tests.e2e.test_batches import ENDPOINT, jsonl, request_line, upload, wait_until
from tests.e2e.test_security import wait_for_records
from tests.e2e.test_tenancy import new_tenant

# Enough work that the batch is still running when the kill lands (a few seconds after
# the first line ends: the kill is a Ray driver of its own).
BATCH_LINES = 300
MAX_TOKENS = 48


def start_batch(platform, store):
    """A new tenant's batch of BATCH_LINES lines on demo-remote, once its first line is
    done. Returns (tenant, client, batch, since)."""
    tenant, key = new_tenant(store)
    client = openai_client(platform, key)
    since = datetime.now(UTC) - timedelta(seconds=1)
    lines = [request_line(f"e{i}", max_tokens=MAX_TOKENS) for i in range(BATCH_LINES)]
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint=ENDPOINT,
                                  completion_window="24h")
    deadline = time.monotonic() + 120
    while client.batches.retrieve(batch.id).request_counts.completed < 1:
        assert time.monotonic() < deadline, "the batch did not start"
        time.sleep(0.1)
    return tenant, client, batch, since


def assert_every_line_once(client, store, tenant: str, batch, since: datetime) -> None:
    """The batch completes with every line once in its output and one ok ledger record per
    line, tagged with the batch."""
    done = wait_until(client, batch.id, {"completed", "failed"}, timeout_s=600)
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (BATCH_LINES, 0)
    assert done.error_file_id is None
    output = jsonl(client, done.output_file_id)
    assert Counter(x["custom_id"] for x in output) == Counter(
        f"e{i}" for i in range(BATCH_LINES))
    assert all(x["response"]["body"]["usage"]["completion_tokens"] == MAX_TOKENS
               for x in output)

    records = wait_for_records(store, tenant, since, BATCH_LINES)
    assert len(records) == BATCH_LINES and {r.outcome for r in records} == {Outcome.OK}
    assert len({r.request_id for r in records}) == BATCH_LINES
    assert {r.batch_id for r in records} == {batch.id}
