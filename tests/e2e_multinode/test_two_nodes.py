"""The platform runs unchanged on a two-node Ray cluster: traffic enters at the head's
gateway, the engine runs on the worker where its custom resource put it, and the ledger in
PostgreSQL records what the client was served."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from openai import OpenAI

from deployments.app import APP_NAME, GATEWAY, engine_deployment_name
from serving.tenancy import Outcome
from tests.e2e_multinode.conftest import alive_actors


def _replica_nodes(deployment: str) -> set[str]:
    """Node ids of a deployment's live replica actors (class `ServeReplica:<app>:<name>`)."""
    return {a["node_id"] for a in alive_actors()
            if a["class_name"] == f"ServeReplica:{APP_NAME}:{deployment}"}


def test_gateway_on_head_engine_on_worker(platform, cluster):
    assert _replica_nodes(GATEWAY) == {cluster["head"]}
    assert _replica_nodes(engine_deployment_name("remote")) == {cluster["worker"]}


def test_completion_through_head_is_served_by_worker_and_accounted(platform, store):
    key = store.create_key("acme").plaintext
    client = OpenAI(base_url=f"{platform['url']}/v1", api_key=key, max_retries=0, timeout=120)
    started = datetime.now(UTC)
    request_id = f"multinode-{uuid.uuid4().hex[:12]}"
    reply = client.chat.completions.create(
        model="remote", messages=[{"role": "user", "content": "hello from the head"}],
        max_tokens=8, extra_headers={"x-client-request-id": request_id})
    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens > 0

    chunks = list(client.chat.completions.create(
        model="remote", messages=[{"role": "user", "content": "stream across nodes"}],
        max_tokens=8, stream=True, extra_body={"ignore_eos": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"

    records = store.usage_records("acme", started - timedelta(minutes=1),
                                  datetime.now(UTC) + timedelta(minutes=1))
    [record] = [r for r in records if r.client_request_id == request_id]
    assert record.outcome == Outcome.OK and record.endpoint == "remote"
    assert (record.prompt_tokens, record.completion_tokens) == (
        reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert len(records) == 2, [r.request_id for r in records]
