"""An engine replica killed mid-batch loses no line and duplicates none: the lines it was
answering are sent again (under the same request ids, nothing recorded for the failed
attempt) once Serve has replaced it, and the batch completes with every line once in the
output and one ok ledger record per line."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from serving.tenancy import Outcome
from tests.e2e.conftest import openai_client
from tests.e2e.test_batches import ENDPOINT, jsonl, request_line, upload, wait_until
from tests.e2e.test_security import wait_for_records
from tests.e2e.test_tenancy import new_tenant
from tests.platform_helpers import kill_serve_replica

# Enough work that the batch is still running when the kill lands (a few seconds after
# the first line ends: the kill is a Ray driver of its own).
LINES = 300


def test_an_engine_replica_killed_mid_batch_loses_and_duplicates_no_line(platform, store):
    name, key = new_tenant(store)
    client = openai_client(platform, key)
    since = datetime.now(UTC) - timedelta(seconds=1)
    lines = [request_line(f"e{i}", max_tokens=48) for i in range(LINES)]
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint=ENDPOINT,
                                  completion_window="24h")
    deadline = time.monotonic() + 120
    while client.batches.retrieve(batch.id).request_counts.completed < 1:
        assert time.monotonic() < deadline, "the batch did not start"
        time.sleep(0.1)

    kill_serve_replica("aifactory#engine-demo-remote#")
    at_kill = client.batches.retrieve(batch.id)
    assert at_kill.status == "in_progress", at_kill  # else the kill proved nothing
    assert at_kill.request_counts.completed < LINES

    done = wait_until(client, batch.id, {"completed", "failed"}, timeout_s=600)
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (LINES, 0)
    assert done.error_file_id is None
    output = jsonl(client, done.output_file_id)
    assert Counter(x["custom_id"] for x in output) == Counter(f"e{i}" for i in range(LINES))
    assert all(x["response"]["body"]["usage"]["completion_tokens"] == 48 for x in output)

    records = wait_for_records(store, name, since, LINES)
    assert len(records) == LINES and {r.outcome for r in records} == {Outcome.OK}
    assert len({r.request_id for r in records}) == LINES
    assert {r.batch_id for r in records} == {batch.id}
