"""`GET /v1/models/{id}` through the official client, and vLLM's `/tokenize` and
`/detokenize` through the gateway: the tenant's own models only (another's answers as a
missing one), vLLM's shapes, the engine's own tokenizer, and one ledger row each without
tokens (they count as requests, not against token quotas)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import openai
import pytest

from tests.e2e.conftest import ENDPOINTS, openai_client
from tests.e2e.test_security import records_of
from tests.e2e.test_tenancy import new_tenant

MESSAGES = [{"role": "user", "content": "Say something about licences."}]


@pytest.mark.parametrize("model", ENDPOINTS)
def test_a_model_is_retrieved_by_its_id(client, model):
    card = client.models.retrieve(model)
    assert (card.id, card.object, card.owned_by) == (model, "model", "aifactory")
    assert card.model_extra["max_model_len"] == 512 and card.model_extra["root"] == model


def test_another_tenants_model_answers_as_a_missing_one(platform, keys):
    globex = openai_client(platform, keys["globex"])
    answers = []
    for model in ("demo", "no-such-model", "\u00e9" * 300):
        with pytest.raises(openai.NotFoundError) as missing:
            globex.models.retrieve(model)
        answers.append((missing.value.code, missing.value.body["param"]))
    assert answers == [("model_not_found", "model")] * 3
    assert globex.models.retrieve("demo-remote").id == "demo-remote"
    assert httpx.get(platform["url"] + "/v1/models/demo", timeout=30).status_code == 401


@pytest.mark.parametrize("model", ENDPOINTS)
def test_tokenize_and_detokenize_as_vllm_answers_them(platform, auth, tokenizer, model):
    with httpx.Client(base_url=platform["url"], headers=auth, timeout=60) as http:
        text = "The licence covers the model's weights."
        tokens = http.post("/tokenize", json={"model": model, "prompt": text,
                                              "add_special_tokens": False})
        assert tokens.status_code == 200, tokens.text
        body = tokens.json()
        assert body["tokens"] == tokenizer.encode(text, add_special_tokens=False)
        assert (body["count"], body["max_model_len"]) == (len(body["tokens"]), 512)
        chat = http.post("/tokenize", json={"model": model, "messages": MESSAGES,
                                            "add_generation_prompt": True}).json()
        assert chat["count"] > len(tokenizer.encode(MESSAGES[0]["content"],
                                                    add_special_tokens=False))
        back = http.post("/detokenize", json={"model": model, "tokens": body["tokens"]})
        assert back.status_code == 200 and back.json() == {"prompt": text}
        assert len(back.headers.get_list("x-request-id")) == 1


@pytest.mark.parametrize(("path", "body", "status", "param"), [
    ("/tokenize", {"prompt": "hi"}, 400, "model"),
    ("/tokenize", {"model": "demo", "prompt": "hi", "max_tokens": 3}, 400, "max_tokens"),
    ("/tokenize", {"model": "demo", "prompt": ["a", "b"]}, 400, "prompt"),
    ("/detokenize", {"model": "demo", "tokens": [-1]}, 400, "tokens"),
    ("/detokenize", {"model": "demo", "tokens": "abc"}, 400, "tokens"),
    ("/detokenize", {"model": "nowhere", "tokens": [1]}, 404, "model"),
])
def test_bad_tokenizer_requests_are_openai_shaped_4xx(platform, auth, path, body, status,
                                                      param):
    reply = httpx.post(platform["url"] + path, json=body, headers=auth, timeout=60)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param


def test_tokenizing_counts_as_a_request_and_costs_no_tokens(platform, store):
    tenant, key = new_tenant(store, requests_per_minute=2, tokens_per_minute=5)
    since = datetime.now(UTC)
    statuses = [httpx.post(platform["url"] + "/tokenize", timeout=60,
                           headers={"authorization": f"Bearer {key}"},
                           json={"model": "demo-remote", "prompt": "word " * 50}).status_code
                for _ in range(3)]
    assert statuses == [200, 200, 429]  # 50 tokens each, past 5 a minute: requests count
    for _ in range(50):
        rows = records_of(store, tenant, since)
        if len(rows) >= 3:
            break
        time.sleep(0.1)
    assert sorted((r.outcome.value, r.prompt_tokens, r.completion_tokens) for r in rows) == [
        ("ok", 0, 0), ("ok", 0, 0), ("rejected", 0, 0)]
