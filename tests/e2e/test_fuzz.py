"""Fuzzed input against the live platform: schemathesis generates requests from the gateway's
own OpenAPI document (schema-valid and schema-violating ones, a fixed number per operation,
derandomized) and checks each answer: no 5xx, an answer within the timeout, a declared status
and content type, a body that conforms to the document. Then the inputs a fuzzer does not
reach: bodies beyond the size limit, invalid UTF-8, JSON nested 100k deep, absurd `n` and
`max_tokens`; each is refused with an OpenAI-shaped 4xx, and the engines still serve."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from serving.gateway.openapi import SCORE_REQUESTS
from serving.gateway.pipeline import MAX_BODY_BYTES
from tests.e2e.conftest import EMBED_ENDPOINT, ENDPOINTS

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# Per request: a hang is a failure, and generation of a few hundred tokens on the CPU engine
# takes far less.
TIMEOUT_S = 60
GOOD = {"prompt": "hello", "max_tokens": 3}


OPERATIONS = [("/v1/chat/completions", "POST"), ("/v1/completions", "POST"), ("/v1/models", "GET"),
              ("/v1/models/{model}", "GET"), ("/tokenize", "POST"), ("/detokenize", "POST"),
              ("/v1/responses", "POST"), ("/v1/responses/{response_id}", "GET"),
              ("/v1/responses/{response_id}", "DELETE"), ("/v1/embeddings", "POST"),
              ("/pooling", "POST"), ("/score", "POST"), ("/v1/score", "POST"),
              ("/rerank", "POST"), ("/v1/rerank", "POST"), ("/v2/rerank", "POST"),
              ("/v1/files", "POST"), ("/v1/files", "GET"), ("/v1/files/{file_id}", "GET"),
              ("/v1/files/{file_id}", "DELETE"), ("/v1/files/{file_id}/content", "GET"),
              ("/v1/batches", "POST"), ("/v1/batches", "GET"), ("/v1/batches/{batch_id}", "GET"),
              ("/v1/batches/{batch_id}/cancel", "POST")]


@pytest.fixture(scope="module")
def gateway_schema(platform):
    """The published document, with `model` narrowed to the platform's endpoints: a random
    name would only ever reach the 404 branch, never an engine."""
    document = httpx.get(platform["url"] + "/openapi.json", timeout=120).json()
    for request in ("ChatCompletionRequest", "CompletionRequest", "TokenizeCompletionRequest",
                    "TokenizeChatRequest", "DetokenizeRequest", "ResponsesRequest"):
        document["components"]["schemas"][request]["properties"]["model"] = {"enum": ENDPOINTS}
    for request in ("EmbeddingCompletionRequest", "EmbeddingChatRequest",
                    "PoolingCompletionRequest", "PoolingChatRequest", *SCORE_REQUESTS,
                    "RerankRequest"):
        document["components"]["schemas"][request]["properties"]["model"] = {
            "enum": [EMBED_ENDPOINT]}
    return schemathesis.openapi.from_dict(document)


# Each operation's strategy under hypothesis directly (schemathesis' pytest loader for a
# schema from a fixture does not run under pytest 9).
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("path,method", OPERATIONS)
def test_fuzzed_requests_get_declared_answers(gateway_schema, platform, auth, path, method, mode):
    @given(case=gateway_schema[path][method].as_strategy(generation_mode=mode))
    @settings(max_examples=25, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def fuzz(case):
        response = case.call_and_validate(base_url=platform["url"], headers=auth,
                                          checks=CHECKS, timeout=TIMEOUT_S)
        statuses[response.status_code] += 1

    statuses: Counter[int] = Counter()
    fuzz()
    print(f"\nfuzzed {method} {path} ({mode}): {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= 10  # the fuzzer did send requests


def test_the_document_declares_the_request_bodies(platform):
    document = httpx.get(platform["url"] + "/openapi.json", timeout=120).json()
    for path, model in (("/v1/chat/completions", "ChatCompletionRequest"),
                        ("/v1/completions", "CompletionRequest")):
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"] == {"$ref": f"#/components/schemas/{model}"}
        declared = document["components"]["schemas"][model]
        assert "model" in declared["required"] and "max_tokens" in declared["properties"]


def _refused(resp: httpx.Response, status: int) -> None:
    assert resp.status_code == status, resp.text[:500]
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["message"]


def _chunks(total: int, size: int = 1 << 20):
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


@pytest.mark.parametrize("model", ENDPOINTS)
def test_hostile_bodies_are_refused_then_service_continues(platform, auth, model):
    with httpx.Client(base_url=platform["url"], timeout=TIMEOUT_S, headers=auth) as http:
        json_type = {"content-type": "application/json"}
        oversized = b'{"model": "%s", "prompt": "' % model.encode() + b"a" * MAX_BODY_BYTES + b'"}'
        _refused(http.post("/v1/completions", content=oversized, headers=json_type), 413)
        # Without a Content-Length (chunked): refused while reading, past the limit.
        _refused(http.post("/v1/completions", content=_chunks(MAX_BODY_BYTES + (1 << 20)),
                           headers=json_type), 413)
        bad_utf8 = b'{"model": "%s", "prompt": "\xc3\x28 \xff"}' % model.encode()
        _refused(http.post("/v1/completions", content=bad_utf8, headers=json_type), 400)
        nested = b'{"model": "%s", "prompt": ' % model.encode() + b"[" * 100_000 + b"]" * 100_000
        _refused(http.post("/v1/completions", content=nested + b"}", headers=json_type), 400)
        for huge in ({"n": 10**9}, {"max_tokens": 10**12}, {"n": 10**9, "max_tokens": 10**12},
                     {"max_tokens": 2**64}, {"n": 2**64}):
            _refused(http.post("/v1/completions",
                               json={"model": model, "prompt": "hi", **huge}), 400)
            chat = {("max_completion_tokens" if k == "max_tokens" else k): v
                    for k, v in huge.items()}
            _refused(http.post("/v1/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": "hi"}], **chat}), 400)

        good = http.post("/v1/completions", json={"model": model, **GOOD})
        assert good.status_code == 200, good.text
        assert good.json()["usage"]["completion_tokens"] >= 1
