"""The Responses API's pure steps: a conversation continued from a stored response, the
reply as its client sees it, the events that carry the response."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from serving.gateway import responses
from serving.tenancy.stored_responses import StoredResponse

NOW = datetime(2026, 12, 4, tzinfo=UTC)
OUTPUT = [{"type": "message", "role": "assistant",
           "content": [{"type": "output_text", "text": "yes", "annotations": []}]}]


def test_a_fresh_request_goes_to_the_engine_unstored():
    engine, conversation = responses.continued({"model": "m", "input": "hi"}, None)
    assert engine == {"model": "m", "input": [{"role": "user", "content": "hi"}],
                      "store": False}
    assert conversation == responses.Conversation(
        [{"role": "user", "content": "hi"}], None, keep=True)
    assert responses.continued({"model": "m", "input": "hi", "store": False}, None)[1].keep \
        is False


def test_a_continued_request_carries_the_whole_conversation():
    before = StoredResponse("resp_1", "acme", "m", NOW, NOW, [{"role": "user", "content": "a"}],
                            {"id": "resp_1", "output": OUTPUT})
    engine, conversation = responses.continued(
        {"model": "m", "input": [{"role": "user", "content": "b"}],
         "previous_response_id": "resp_1"}, before)
    assert "previous_response_id" not in engine and engine["store"] is False
    assert engine["input"] == [{"role": "user", "content": "a"}, *OUTPUT,
                               {"role": "user", "content": "b"}]
    assert conversation.previous_response_id == "resp_1"


def test_the_answer_drops_vllms_fields_and_says_what_it_continues():
    conversation = responses.Conversation([], "resp_0", keep=False)
    out = responses.answered({"id": "resp_1", "kv_transfer_params": None,
                              "input_messages": None, "previous_response_id": None},
                             conversation)
    assert out == {"id": "resp_1", "previous_response_id": "resp_0", "store": False,
                   "error": None, "text": {"format": {"type": "text"}}}


def test_events_that_carry_the_response_are_parsed_and_rewritten():
    body = {"type": "response.completed", "sequence_number": 9,
            "response": {"id": "resp_1", "usage": {"input_tokens": 5, "output_tokens": 2},
                         "kv_transfer_params": None}}
    event = f"event: response.completed\ndata: {json.dumps(body)}\n\n"
    kind, parsed = responses.event_of(event)
    assert kind == "response.completed" and responses.usage_of(parsed["response"]) == {
        "prompt_tokens": 5, "completion_tokens": 2}
    out = responses.response_event(kind, parsed, responses.Conversation([], None, True))
    assert out.startswith("event: response.completed\ndata: ") and out.endswith("\n\n")
    assert "kv_transfer_params" not in out
    delta = 'event: response.output_text.delta\ndata: {"delta":"x"}\n\n'
    assert responses.event_of(delta) == ("response.output_text.delta", None)
    assert responses.event_of("event: response.completed\ndata: {oops\n\n") == (
        "response.completed", None)


def test_vllms_responses_conform_once_answered():
    """Bodies and events as vLLM 0.32 answers them (recorded from EngineHost on the demo
    model: tests/conformance/vllm_responses_sample.json) break OpenAI's schema as they are
    (null `text`, `user`, `usage`, an `output_text` part's null `logprobs`, no `error`);
    answered and rewritten by the gateway, none does."""
    from pathlib import Path

    from tests.conformance.openai_spec import violations

    sample = json.loads((Path(__file__).parents[1] / "conformance" /
                         "vllm_responses_sample.json").read_text())
    conversation = responses.Conversation([], None, True)
    assert violations("Response", sample["plain"]) != []
    for body in (sample["plain"], sample["logprobs"]):
        assert violations("Response", responses.answered(body, conversation)) == []
    broken = []
    for event in sample["stream"]:
        kind, body = responses.event_of(event)
        if body is not None:
            event = responses.response_event(kind, body, conversation)
        broken += violations("ResponseStreamEvent", json.loads(event.split("\n", 1)[1][6:]))
    assert broken == []
