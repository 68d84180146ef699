"""vLLM's /pooling, /score and /rerank (at every path `vllm serve` has them) on `demo-embed`,
the demo model run by vLLM as an embedding model (so it scores as a bi-encoder: the cosine of
two embeddings): the engine's own values, usage billed as prompt tokens in quotas, the
ledger and the metrics, vLLM's answers to what the model cannot do, and the tenant
boundary."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import httpx
import pytest

from tests.conformance.openai_spec import violations
from tests.e2e import ray_metrics
from tests.e2e.conftest import EMBED_ENDPOINT
from tests.e2e.test_security import wait_for_records
from tests.e2e.test_tenancy import new_tenant

ANY = object()  # vLLM's own refusal: its param is vLLM's to name
QUERY = "The licence covers the weights."
DOCUMENTS = ["Licences and weights.", QUERY, "x"]


@pytest.fixture(scope="module")
def embedder(platform, store):
    """A fresh tenant granted demo-embed: its ledger rows and metrics are this module's."""
    name, key = new_tenant(store)
    store.grant(EMBED_ENDPOINT, name)
    http = httpx.Client(base_url=platform["url"], timeout=60,
                        headers={"authorization": f"Bearer {key}"})
    yield name, http
    http.close()


def ok(reply: httpx.Response) -> dict:
    assert reply.status_code == 200, reply.text
    return reply.json()


def tokens(tokenizer, *texts: str) -> int:
    return sum(len(tokenizer.encode(t)) for t in texts)


def test_pooling_gives_the_models_vectors(embedder, platform, tokenizer):
    _, http = embedder
    hidden = json.loads((platform["home"] / "models" / "demo" / "config.json").read_text())[
        "hidden_size"]
    pooled = ok(http.post("/pooling", json={"model": EMBED_ENDPOINT, "input": DOCUMENTS}))
    assert pooled["object"] == "list" and pooled["model"] == EMBED_ENDPOINT
    assert [d["index"] for d in pooled["data"]] == [0, 1, 2]
    vectors = [d["data"] for d in pooled["data"]]
    assert all(len(v) == hidden for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-2 for v in vectors)
    assert pooled["usage"]["prompt_tokens"] == tokens(tokenizer, *DOCUMENTS)
    # The model's pooling task is embed: /pooling gives what /v1/embeddings gives.
    embedded = ok(http.post("/v1/embeddings", json={"model": EMBED_ENDPOINT, "input": DOCUMENTS,
                                                    "encoding_format": "float"}))
    for a, b in zip(vectors, (d["embedding"] for d in embedded["data"])):
        assert max(abs(x - y) for x, y in zip(a, b)) < 1e-2
    chat = ok(http.post("/pooling", json={"model": EMBED_ENDPOINT,
                                          "messages": [{"role": "user", "content": QUERY}]}))
    assert len(chat["data"][0]["data"]) == hidden


@pytest.mark.parametrize(("path", "body"), [
    ("/score", {"queries": QUERY, "documents": DOCUMENTS}),
    ("/v1/score", {"text_1": QUERY, "text_2": DOCUMENTS}),
    ("/score", {"queries": [QUERY] * 3, "items": DOCUMENTS}),     # N:N, pair by pair
])
def test_score_is_highest_for_the_same_text(embedder, tokenizer, path, body):
    _, http = embedder
    scored = ok(http.post(path, json={"model": EMBED_ENDPOINT, **body}))
    assert [d["index"] for d in scored["data"]] == [0, 1, 2]
    scores = [d["score"] for d in scored["data"]]
    assert abs(scores[1] - 1) < 1e-2  # cosine of a text with itself
    assert scores[1] > scores[0] and scores[1] > scores[2]
    queries = [QUERY] if isinstance(body.get("queries", QUERY), str) else body["queries"]
    assert scored["usage"]["prompt_tokens"] == tokens(tokenizer, *queries, *DOCUMENTS)


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
def test_rerank_orders_the_documents(embedder, tokenizer, path):
    _, http = embedder
    ranked = ok(http.post(path, json={"model": EMBED_ENDPOINT, "query": QUERY,
                                      "documents": DOCUMENTS}))
    results = ranked["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2]
    assert results[0]["index"] == 1 and results[0]["document"] == {"text": QUERY,
                                                                     "multi_modal": None}
    relevance = [r["relevance_score"] for r in results]
    assert relevance == sorted(relevance, reverse=True)
    assert all(DOCUMENTS[r["index"]] == r["document"]["text"] for r in results)
    assert ranked["usage"] == {"prompt_tokens": tokens(tokenizer, QUERY, *DOCUMENTS),
                               "total_tokens": tokens(tokenizer, QUERY, *DOCUMENTS)}
    top = ok(http.post(path, json={"model": EMBED_ENDPOINT, "query": QUERY,
                                   "documents": DOCUMENTS, "top_n": 2}))
    assert [r["index"] for r in top["results"]] == [r["index"] for r in results[:2]]


def test_each_request_is_one_ledger_row_and_counted_in_the_metrics(embedder, store):
    name, http = embedder
    since = datetime.now(UTC)
    usage = {}
    for path, body in (("/pooling", {"input": DOCUMENTS}),
                       ("/score", {"queries": QUERY, "documents": DOCUMENTS}),
                       ("/rerank", {"query": QUERY, "documents": DOCUMENTS})):
        reply = http.post(path, json={"model": EMBED_ENDPOINT, **body})
        usage[reply.headers["x-request-id"]] = ok(reply)["usage"]["prompt_tokens"]
    rows = [r for r in wait_for_records(store, name, since, 3) if r.request_id in usage]
    assert sorted((r.request_id, r.endpoint, r.outcome.value, r.prompt_tokens,
                   r.completion_tokens, r.http_status) for r in rows) == sorted(
        (request_id, EMBED_ENDPOINT, "ok", prompt, 0, 200)
        for request_id, prompt in usage.items())

    # This tenant's requests so far (the module's tests before this one included), exactly.
    def served(samples) -> float:
        return ray_metrics.total(samples, "ray_aifactory_requests_total", tenant=name,
                                 endpoint=EMBED_ENDPOINT, outcome="ok")

    every = store.usage_records(name, datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC))
    samples = ray_metrics.wait_for(lambda s: served(s) >= len(every))
    assert served(samples) == len(every)
    assert ray_metrics.total(samples, "ray_aifactory_prompt_tokens_total", tenant=name,
                             endpoint=EMBED_ENDPOINT) == sum(r.prompt_tokens for r in every)


def test_pairs_count_against_the_tenants_quota(platform, store):
    """A rerank claims its pairs' tokens before the engine runs: 20 pairs of ~14 tokens
    each are past 60 tokens a minute, one pair is not."""
    name, key = new_tenant(store, tokens_per_minute=60)
    store.grant(EMBED_ENDPOINT, name)
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": EMBED_ENDPOINT, "query": "word " * 5}
    with httpx.Client(base_url=platform["url"], timeout=60, headers=headers) as http:
        assert http.post("/rerank", json={**body, "documents": ["word " * 5]}).status_code == 200
        refused = http.post("/rerank", json={**body, "documents": ["word " * 5] * 20})
    assert refused.status_code == 429, refused.text
    assert "token" in refused.json()["error"]["message"]


@pytest.mark.parametrize(("path", "body", "status", "param"), [
    # What a generating model does not do: as /v1/embeddings answers it.
    ("/pooling", {"model": "demo-remote", "input": "hi"}, 400, "model"),
    ("/score", {"model": "demo-remote", "queries": "a", "documents": ["b"]}, 400, "model"),
    ("/v1/rerank", {"model": "demo", "query": "a", "documents": ["b"]}, 400, "model"),
    ("/v2/rerank", {"model": "demo-remote", "query": "a", "documents": ["b"]}, 400, "model"),
    # vLLM's own refusals.
    ("/pooling", {"model": EMBED_ENDPOINT, "input": "hi", "task": "classify"}, 400, "task"),
    ("/pooling", {"model": EMBED_ENDPOINT, "input": "hi", "normalize": True}, 400, "normalize"),
    ("/pooling", {"model": EMBED_ENDPOINT, "data": {"a": 1}}, 400, "task"),
    ("/score", {"model": EMBED_ENDPOINT, "queries": ["a", "b"], "documents": ["a", "b", "c"]},
     400, ANY),
    ("/score", {"model": EMBED_ENDPOINT, "text_1": "a"}, 400, "text_2"),
    ("/rerank", {"model": EMBED_ENDPOINT, "query": "a", "documents": ["b"], "top_n": -1}, 400,
     "top_n"),
    ("/rerank", {"model": EMBED_ENDPOINT, "query": "word " * 600, "documents": ["b"]}, 400, ANY),
    ("/rerank", {"model": EMBED_ENDPOINT, "query": "a",
                 "documents": [{"content": [{"type": "text", "text": "b"}]}]}, 400, ANY),
    # The gateway's: unknown fields, bodies it cannot count, bytes it does not relay.
    ("/rerank", {"model": EMBED_ENDPOINT, "query": "a", "documents": ["b"], "n": 2}, 400, "n"),
    ("/rerank", {"model": EMBED_ENDPOINT, "query": "a", "documents": []}, 400, "documents"),
    ("/score", {"model": EMBED_ENDPOINT, "queries": "a", "documents": ["b"] * 3000}, 400,
     "documents"),
    ("/pooling", {"model": EMBED_ENDPOINT, "input": "hi", "encoding_format": "bytes"}, 400,
     "encoding_format"),
    ("/rerank", {"query": "a", "documents": ["b"]}, 400, "model"),
    ("/score", {"model": "nowhere", "queries": "a", "documents": ["b"]}, 404, "model"),
])
def test_what_an_endpoint_cannot_do_is_a_4xx(platform, auth, path, body, status, param):
    reply = httpx.post(platform["url"] + path, json=body, headers=auth, timeout=60)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert param is ANY or error["param"] == param, error
    assert violations("ErrorResponse", reply.json()) == []


@pytest.mark.parametrize(("path", "body"), [
    ("/pooling", {"input": "hi"}),
    ("/score", {"queries": "a", "documents": ["b"]}),
    ("/rerank", {"query": "a", "documents": ["b"]}),
])
def test_another_tenants_endpoint_is_a_404_as_for_none(platform, store, keys, path, body):
    """A tenant not granted demo-embed, and globex asking for acme's own demo: 404, before
    anything learns whether the model could have answered."""
    _, stranger = new_tenant(store)
    for key, model in ((stranger, EMBED_ENDPOINT), (keys["globex"], "demo")):
        reply = httpx.post(platform["url"] + path, json={"model": model, **body}, timeout=60,
                           headers={"authorization": f"Bearer {key}"})
        assert reply.status_code == 404, reply.text
        assert reply.json()["error"]["code"] == "model_not_found"
