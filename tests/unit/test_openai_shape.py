"""The gateway's one pass over response bodies: nulls the spec does not allow are dropped,
required ones kept, chat logprobs get their `refusal`; a stream event the same, cheaply.
Checked against the pinned OpenAI schemas with bodies as vLLM 0.32 writes them."""

from __future__ import annotations

import json

from serving.gateway.openai_shape import shaped, shaped_event
from tests.conformance.openai_spec import violations

CHAT = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "demo",
    "choices": [{"index": 0, "message": {
        "role": "assistant", "content": "hi", "refusal": None, "annotations": None,
        "audio": None, "function_call": None, "reasoning": None},
        "logprobs": {"content": [{"token": "hi", "logprob": -1.0, "bytes": None,
                                  "top_logprobs": [{"token": "hi", "logprob": -1.0,
                                                    "bytes": [104, 105]}]}]},
        "finish_reason": "length", "stop_reason": None, "token_ids": None,
        "routed_experts": None}],
    "service_tier": None, "system_fingerprint": "vllm-0.32.0",
    "usage": {"prompt_tokens": 3, "total_tokens": 4, "completion_tokens": 1,
              "prompt_tokens_details": None, "completion_tokens_details": None},
    "prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None,
    "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}


def test_a_chat_body_as_vllm_writes_it_conforms_once_shaped():
    assert violations("CreateChatCompletionResponse", CHAT) != []
    body = shaped(CHAT)
    assert violations("CreateChatCompletionResponse", body) == []
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "hi", "refusal": None}
    assert choice["logprobs"]["refusal"] is None and choice["logprobs"]["content"][0][
        "bytes"] is None
    assert set(body) == {"id", "object", "created", "model", "choices",
                         "system_fingerprint", "usage"}


def test_what_a_client_asked_for_stays():
    asked = {**CHAT, "prompt_token_ids": [1, 2, 3]}
    assert shaped(asked)["prompt_token_ids"] == [1, 2, 3]


def test_stream_events_lose_vllms_null_fields_and_keep_the_rest():
    first = ('data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"demo",'
             '"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
             '"logprobs":null,"finish_reason":null}],"prompt_token_ids":null,'
             '"prompt_text":null}\n\n')
    text = ('data: {"id":"c","object":"text_completion","created":1,"model":"demo",'
            '"choices":[{"index":0,"text":"a \\",\\"token_ids\\":null","logprobs":null,'
            '"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,'
            '"token_ids":null}]}\n\n')
    chunk = json.loads(shaped_event(first)[len("data: "):])
    assert "prompt_text" not in chunk and "prompt_token_ids" not in chunk
    assert violations("CreateChatCompletionStreamResponse", chunk) == []
    completion = json.loads(shaped_event(text)[len("data: "):])
    assert completion["choices"][0] == {"index": 0, "text": 'a ",\\"token_ids\\":null'
                                        .replace("\\", ""), "logprobs": None,
                                        "finish_reason": None}


def test_a_chat_stream_event_with_logprobs_gets_its_refusal():
    event = ('data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"demo",'
             '"choices":[{"index":0,"delta":{"content":"é"},"logprobs":{"content":[{'
             '"token":"é","logprob":-1.0,"bytes":[195,169],"top_logprobs":[]}]},'
             '"finish_reason":null,"token_ids":null}]}\n\n')
    out = shaped_event(event)
    assert out.startswith("data: {") and out.endswith("}\n\n") and "é" in out
    chunk = json.loads(out[len("data: "):])
    assert chunk["choices"][0]["logprobs"]["refusal"] is None
    assert violations("CreateChatCompletionStreamResponse", chunk) == []


def test_an_echoed_prompts_token_ids_go_unless_asked_for():
    event = ('data: {"id":"c","object":"text_completion","created":1,"model":"demo",'
             '"choices":[{"index":0,"text":"a","logprobs":null,"finish_reason":null,'
             '"stop_reason":null,"prompt_token_ids":[67,8],"token_ids":null}]}\n\n')
    assert "prompt_token_ids" not in shaped_event(event)
    assert '"prompt_token_ids":[67,8]' in shaped_event(event, token_ids=True)
