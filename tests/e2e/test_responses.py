"""The Responses API through the official openai client: plain and streamed, continued with
`previous_response_id`, retrieved and deleted; stored in the platform's store for the tenant
that made it (another tenant's id is as missing as one that never was), billed in the ledger
with the engine's counts."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import openai
import pytest

from tests.e2e.conftest import openai_client
from tests.e2e.test_security import wait_for_records

MODEL = "demo-remote"  # shared by acme and globex: isolation is the store's, not the model's


def test_a_response_is_answered_billed_stored_and_continued(client, store):
    since = datetime.now(UTC)
    first = client.responses.create(model=MODEL, input="Tell me about licences.",
                                    max_output_tokens=8, extra_body={"ignore_eos": True})
    assert first.id.startswith("resp_") and first.object == "response"
    assert first.usage.output_tokens == 8 and first.output_text
    assert first.previous_response_id is None
    second = client.responses.create(model=MODEL, input="And then?", max_output_tokens=4,
                                     previous_response_id=first.id)
    assert second.previous_response_id == first.id
    # The conversation so far went to the engine: the first exchange, then the new input.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    again = client.responses.retrieve(first.id)
    assert (again.id, again.output_text) == (first.id, first.output_text)
    rows = [r for r in wait_for_records(store, "acme", since, 2) if r.endpoint == MODEL]
    assert sorted((r.prompt_tokens, r.completion_tokens) for r in rows) == sorted([
        (first.usage.input_tokens, 8), (second.usage.input_tokens, second.usage.output_tokens)])


def test_a_streamed_response_is_billed_and_stored(client, store):
    since = datetime.now(UTC)
    events = list(client.responses.create(model=MODEL, input="Hello", max_output_tokens=6,
                                           stream=True, extra_body={"ignore_eos": True}))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    done = events[-1].response
    assert done.usage.output_tokens == 6
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert client.responses.retrieve(done.id).output_text == text
    rows = [r for r in wait_for_records(store, "acme", since, 1) if r.endpoint == MODEL]
    assert [(r.prompt_tokens, r.completion_tokens, r.ttft_s is not None) for r in rows] == [
        (done.usage.input_tokens, 6, True)]


def test_a_response_is_its_tenants_alone(platform, client, keys):
    mine = client.responses.create(model=MODEL, input="secret plans", max_output_tokens=3)
    globex = openai_client(platform, keys["globex"])
    with pytest.raises(openai.NotFoundError):
        globex.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        globex.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError) as refused:
        globex.responses.create(model=MODEL, input="go on", previous_response_id=mine.id,
                                max_output_tokens=3)
    assert refused.value.body["param"] == "previous_response_id"
    assert client.responses.retrieve(mine.id).id == mine.id  # still there, still acme's


def test_deleted_and_unstored_responses_are_gone(client):
    kept = client.responses.create(model=MODEL, input="hi", max_output_tokens=2)
    client.responses.delete(kept.id)
    unstored = client.responses.create(model=MODEL, input="hi", max_output_tokens=2,
                                       store=False)
    assert unstored.store is False
    for gone in (kept.id, unstored.id):
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(gone)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(kept.id)


@pytest.mark.parametrize(("method", "path", "body", "status", "param"), [
    ("POST", "/v1/responses", {"model": MODEL, "input": "hi", "previous_response_id": 7},
     400, "previous_response_id"),
    ("POST", "/v1/responses", {"model": MODEL, "input": "hi",
                               "previous_response_id": "resp_" + "0" * 16}, 404,
     "previous_response_id"),
    ("POST", "/v1/responses", {"model": MODEL, "input": 5,
                               "previous_response_id": "resp_x"}, 400, "input"),
    ("POST", "/v1/responses", {"model": MODEL, "input": "hi", "max_tokens": 3}, 400,
     "max_tokens"),
    ("POST", "/v1/responses", {"input": "hi"}, 400, "model"),
    # Found by the fuzzer: vLLM's own server answers 500 (IndexError) to this.
    ("POST", "/v1/responses", {"model": MODEL, "input": [
        {"content": "", "role": "user"},
        {"content": [], "role": "assistant", "id": "", "status": "completed",
         "type": "message"}]}, 400, None),
    ("POST", "/v1/responses", {"model": MODEL, "input": "hi", "store": "yes"}, 400, "store"),
    ("GET", "/v1/responses/..%2F..%2Fadmin%2Fv1%2Ftenants", None, 404, None),
    ("GET", "/v1/responses/" + "r" * 5000, None, 404, None),
    ("DELETE", "/v1/responses/resp_\u00e9", None, 404, None),
])
def test_bad_responses_requests_are_openai_shaped_4xx(platform, auth, method, path, body,
                                                     status, param):
    reply = httpx.request(method, platform["url"] + path, json=body, headers=auth, timeout=60)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert len(error["message"]) < 200
