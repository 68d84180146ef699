"""A gateway replica killed mid-batch loses no line and duplicates none: the other replica's
worker takes its lines over when their leases run out, the output file holds every line once,
and the ledger one record per line (PostgreSQL store, two replicas behind HAProxy). It runs
last in its package (conftest.py): the replica it kills is not waited for."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from openai import OpenAI

from deployments.app import APP_NAME, GATEWAY

LINES = 40


def test_a_gateway_replica_killed_mid_batch_loses_and_duplicates_no_line(platform, store):
    import ray

    store.create_tenant("batcher")
    store.grant("shared", "batcher")
    client = OpenAI(api_key=store.create_key("batcher").plaintext,
                    base_url=platform["url"] + "/v1", max_retries=5)
    since = datetime.now(UTC) - timedelta(seconds=1)
    lines = [{"custom_id": f"k{i}", "method": "POST", "url": "/v1/completions",
              "body": {"model": "shared", "prompt": f"line {i}", "max_tokens": 24,
                       "ignore_eos": True}} for i in range(LINES)]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    file_id = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch").id
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/completions",
                                  completion_window="24h")
    deadline = time.monotonic() + 120
    while client.batches.retrieve(batch.id).request_counts.completed < 3:
        assert time.monotonic() < deadline, "the batch did not start"
        time.sleep(0.2)

    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    try:  # both replicas run the worker: either may hold lines now
        [victim, *_] = [a for a in ray.util.list_named_actors(all_namespaces=True)
                        if f"SERVE_REPLICA::{APP_NAME}#{GATEWAY}#" in a["name"]]
        ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]),
                 no_restart=True)
    finally:
        ray.shutdown()

    deadline = time.monotonic() + 300
    while (done := client.batches.retrieve(batch.id)).status != "completed":
        assert time.monotonic() < deadline, done
        time.sleep(1)
    assert (done.request_counts.completed, done.request_counts.failed) == (LINES, 0)
    output = [json.loads(x) for x in client.files.content(done.output_file_id).content
              .splitlines()]
    assert Counter(x["custom_id"] for x in output) == Counter(f"k{i}" for i in range(LINES))
    records = [r for r in store.usage_records("batcher", since,
                                              datetime.now(UTC) + timedelta(minutes=1))
               if r.request_id.startswith(batch.id)]
    assert len(records) == LINES == len({r.request_id for r in records})
    assert {r.outcome for r in records} == {"ok"}
