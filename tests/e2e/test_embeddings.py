"""`/v1/embeddings` through the official openai client on `demo-embed` (the demo model run by
vLLM as an embedding model): vectors that are the engine's own (deterministic, normalised,
one per input), usage that counts in quotas and the ledger, OpenAI's schema, and OpenAI-shaped
4xx for what an embedding endpoint cannot do."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import httpx
import openai
import pytest

from tests.conformance.openai_spec import violations
from tests.e2e.conftest import EMBED_ENDPOINT, openai_client
from tests.e2e.test_security import records_of
from tests.e2e.test_tenancy import new_tenant

ANY = object()  # vLLM's own refusal: its param is vLLM's to name


def test_embeddings_are_the_engines_own_and_billed_as_prompt_tokens(client, store, tokenizer,
                                                                    keys):
    since = datetime.now(UTC)
    texts = ["The licence covers the weights.", "Licences and weights.", "x"]
    first = client.embeddings.create(model=EMBED_ENDPOINT, input=texts)  # base64 on the wire
    again = client.embeddings.create(model=EMBED_ENDPOINT, input=texts, encoding_format="float")
    assert [d.index for d in first.data] == [0, 1, 2]
    vectors = [d.embedding for d in first.data]
    assert len({len(v) for v in vectors}) == 1 and len(vectors[0]) >= 16
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-2 for v in vectors)
    for a, b in zip(vectors, (d.embedding for d in again.data)):
        assert max(abs(x - y) for x, y in zip(a, b)) < 1e-2  # the same input, the same vector
    assert vectors[0] != vectors[1]
    expected = sum(len(tokenizer.encode(t)) for t in texts)
    assert first.usage.prompt_tokens == first.usage.total_tokens == expected
    for _ in range(100):
        rows = [r for r in records_of(store, "acme", since) if r.endpoint == EMBED_ENDPOINT]
        if len(rows) >= 2:
            break
        time.sleep(0.1)
    assert [(r.outcome.value, r.prompt_tokens, r.completion_tokens) for r in rows] == [
        ("ok", expected, 0)] * 2


def test_the_body_conforms_to_openais_schema(platform, auth):
    reply = httpx.post(platform["url"] + "/v1/embeddings", headers=auth, timeout=60,
                       json={"model": EMBED_ENDPOINT, "input": "hello"})
    assert reply.status_code == 200
    assert violations("CreateEmbeddingResponse", reply.json()) == []


def test_embedding_tokens_count_against_the_tenants_quota(platform, store):
    tenant, key = new_tenant(store, tokens_per_minute=30)
    store.grant(EMBED_ENDPOINT, tenant)
    client = openai_client(platform, key)
    client.embeddings.create(model=EMBED_ENDPOINT, input="word " * 5)
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model=EMBED_ENDPOINT, input="word " * 100)


@pytest.mark.parametrize(("path", "body", "status", "param"), [
    ("/v1/embeddings", {"input": "hi"}, 400, "model"),
    ("/v1/embeddings", {"model": EMBED_ENDPOINT, "input": []}, 400, "input"),
    ("/v1/embeddings", {"model": EMBED_ENDPOINT, "input": ["a"] * 3000}, 400, "input"),
    ("/v1/embeddings", {"model": EMBED_ENDPOINT, "input": "hi", "max_tokens": 3}, 400,
     "max_tokens"),
    ("/v1/embeddings", {"model": EMBED_ENDPOINT, "input": "word " * 2000}, 400, ANY),
    ("/v1/embeddings", {"model": "demo", "input": "hi"}, 400, "model"),
    ("/v1/chat/completions", {"model": EMBED_ENDPOINT,
                              "messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ("/v1/embeddings", {"model": "nowhere", "input": "hi"}, 404, "model"),
])
def test_what_an_embedding_endpoint_cannot_do_is_a_4xx(platform, auth, path, body, status,
                                                       param):
    reply = httpx.post(platform["url"] + path, json=body, headers=auth, timeout=60)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert param is ANY or error["param"] == param
    assert violations("ErrorResponse", reply.json()) == []


def test_another_tenant_cannot_reach_an_endpoint_it_was_not_granted(platform, store):
    _, key = new_tenant(store)
    with pytest.raises(openai.NotFoundError):
        openai_client(platform, key).embeddings.create(model=EMBED_ENDPOINT, input="hi")
