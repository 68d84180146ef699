"""Every body the gateway answers on the OpenAI routes validates against OpenAI's published
OpenAPI schemas (pinned: tests/conformance/openai_schemas.json, commit and version inside):
chat and completions, plain and streamed with usage, logprobs, n > 1, tools; the model list
and a model; embeddings; Responses and their events; and an error body for every status
the gateway emits. A strict client (a typed SDK in another language, a validating proxy)
accepts all of them."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conformance.openai_spec import pinned_commit, violations
from tests.e2e.conftest import ENDPOINTS
from tests.e2e.test_tenancy import new_tenant

MESSAGES = [{"role": "user", "content": "Say something about licences."}]
# vLLM's own fields, null unless a client asks vLLM for them: none should reach a client
# who did not.
ENGINE_FIELDS = ("kv_transfer_params", "ec_transfer_params", "prompt_text", "token_ids",
                 "routed_experts", "stop_reason", "prompt_logprobs")
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


def events(reply: httpx.Response) -> list[dict]:
    found = []
    for line in reply.iter_lines():
        if line.startswith("data: {"):
            found.append(json.loads(line[len("data: "):]))
    return found


def chat_cases(model: str) -> list[dict]:
    base = {"model": model, "messages": MESSAGES, "max_tokens": 8, "temperature": 0}
    return [base, {**base, "n": 2, "temperature": 1.0, "seed": 7, "logprobs": True,
                   "top_logprobs": 2},
            {**base, "max_tokens": 24, "tools": TOOLS,
             "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}]


def completion_cases(model: str) -> list[dict]:
    base = {"model": model, "prompt": "Licences are", "max_tokens": 8, "temperature": 0}
    return [base, {**base, "n": 2, "temperature": 1.0, "seed": 7, "logprobs": 2},
            {**base, "prompt": ["a", "b"], "echo": True}]


@pytest.mark.parametrize("model", ENDPOINTS)
def test_chat_and_completion_bodies_and_chunks_conform(platform, auth, model):
    broken: set[str] = set()  # each violation once, however many bodies show it
    with httpx.Client(base_url=platform["url"], headers=auth, timeout=120) as http:
        for path, schema, chunk_schema, cases in (
                ("/v1/chat/completions", "CreateChatCompletionResponse",
                 "CreateChatCompletionStreamResponse", chat_cases(model)),
                ("/v1/completions", "CreateCompletionResponse", "CreateCompletionResponse",
                 completion_cases(model))):
            for body in cases:
                reply = http.post(path, json=body)
                assert reply.status_code == 200, reply.text
                broken.update(f"{path}: {v}" for v in violations(schema, reply.json()))
                assert reply.headers.get_list("x-request-id") == [reply.headers["x-request-id"]]
                streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
                with http.stream("POST", path, json=streamed) as stream:
                    assert stream.status_code == 200
                    chunks = events(stream)
                assert chunks and chunks[-1]["usage"]["completion_tokens"] > 0
                for chunk in chunks:
                    broken.update(f"{path} stream: {v}" for v in violations(
                        chunk_schema, chunk, streamed=path == "/v1/completions"))
                    broken.update(f"{path} stream: engine field {name}"
                                  for name in ENGINE_FIELDS if name in json.dumps(chunk))
                broken.update(f"{path}: engine field {name}"
                              for name in ENGINE_FIELDS if name in reply.text)
    assert not broken, f"against openai-openapi {pinned_commit()}:\n" + "\n".join(
        sorted(broken))


def test_models_conform(client, platform, auth):
    listed = httpx.get(platform["url"] + "/v1/models", headers=auth, timeout=30).json()
    one = httpx.get(platform["url"] + "/v1/models/demo", headers=auth, timeout=30).json()
    assert violations("ListModelsResponse", listed) == []
    assert violations("Model", one) == []


def test_every_error_status_the_gateway_emits_conforms(platform, store, auth):
    tenant, key = new_tenant(store, requests_per_minute=1)
    inactive, inactive_key = new_tenant(store)
    store.update_tenant(inactive, status="suspended")
    url = platform["url"]
    probes = {
        400: httpx.post(url + "/v1/completions", headers=auth, content=b"{not json"),
        401: httpx.get(url + "/v1/models"),
        403: httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {inactive_key}"}),
        404: httpx.post(url + "/v1/completions", headers=auth,
                        json={"model": "nowhere", "prompt": "x"}),
        413: httpx.post(url + "/v1/completions", headers=auth,
                        content=b" " * (9 * 1024 * 1024)),
    }
    engine_400 = httpx.post(url + "/v1/chat/completions", headers=auth, json={
        "model": "demo-remote", "messages": MESSAGES, "max_tokens": -1})
    for _ in range(2):
        limited = httpx.post(url + "/v1/completions",
                             headers={"authorization": f"Bearer {key}"},
                             json={"model": "demo-remote", "prompt": "x", "max_tokens": 1})
    probes[429] = limited
    broken = []
    for status, reply in [*probes.items(), (400, engine_400)]:
        assert reply.status_code == status, (status, reply.text)
        broken += [f"{status}: {v}" for v in violations("ErrorResponse", reply.json())]
    assert not broken, "\n".join(broken)


def test_responses_and_their_events_conform(platform, auth):
    """Responses API: the response, plain (with logprobs asked for) and retrieved, continued
    from a stored one, and every event of its stream, against OpenAI's `Response` and
    `ResponseStreamEvent`."""
    broken: set[str] = set()
    with httpx.Client(base_url=platform["url"], headers=auth, timeout=120) as http:
        base = {"model": "demo-remote", "input": "Tell me about licences.",
                "max_output_tokens": 6}
        first = http.post("/v1/responses", json={**base, "top_logprobs": 2, "include": [
            "message.output_text.logprobs"]})
        assert first.status_code == 200, first.text
        follow = http.post("/v1/responses", json={**base, "input": "More.",
                                                  "previous_response_id": first.json()["id"]})
        again = http.get(f"/v1/responses/{first.json()['id']}")
        for reply in (first, follow, again):
            assert reply.status_code == 200, reply.text
            broken.update(f"response: {v}" for v in violations("Response", reply.json()))
        with http.stream("POST", "/v1/responses", json={**base, "stream": True}) as stream:
            assert stream.status_code == 200
            datas = [json.loads(line[len("data: "):]) for line in stream.iter_lines()
                     if line.startswith("data: ")]
        assert datas[-1]["type"] == "response.completed"
        for data in datas:
            broken.update(f"stream {data.get('type')}: {v}"
                          for v in violations("ResponseStreamEvent", data))
        for body in (first.text, follow.text, json.dumps(datas)):
            broken.update(f"engine field {name}" for name in (
                "kv_transfer_params", "input_messages", "output_messages") if name in body)
    assert not broken, f"against openai-openapi {pinned_commit()}:\n" + "\n".join(
        sorted(broken))

