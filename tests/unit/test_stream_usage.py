"""Running usage: a stream cut short is billed what the engine made up to its last relayed
event. The events are vLLM's own shapes (completions and chat, with continuous usage)."""

from __future__ import annotations

import json

import pytest

from serving.gateway.stream_usage import RunningUsage, StreamWants


def completion_event(index: int, text: str, prompt: int, done: int) -> str:
    return ('data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"demo",'
            f'"choices":[{{"index":{index},"text":{json.dumps(text)},"logprobs":null,'
            '"finish_reason":null,"stop_reason":null}],'
            f'"usage":{{"prompt_tokens":{prompt},"total_tokens":{prompt + done},'
            f'"completion_tokens":{done}}}}}\n\n')


def chat_event(index: int, content: str, prompt: int, done: int) -> str:
    return ('data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,'
            f'"model":"demo","choices":[{{"index":{index},"delta":{{"content":'
            f'{json.dumps(content)}}},"logprobs":null,"finish_reason":null}}],'
            f'"usage":{{"prompt_tokens":{prompt},"total_tokens":{prompt + done},'
            f'"completion_tokens":{done},"completion_tokens_details":'
            '{"reasoning_tokens":0}}}\n\n')


def test_nothing_seen_is_no_count():
    assert RunningUsage(StreamWants()).totals() is None


@pytest.mark.parametrize("make", [completion_event, chat_event])
def test_the_running_counts_are_cut_unless_asked_for(make):
    event = make(0, 'a "usage": {} in the text', 7, 1)
    cut = RunningUsage(StreamWants()).take(event)
    body = json.loads(cut[len("data: "):])
    assert "usage" not in body and body == {
        k: v for k, v in json.loads(event[len("data: "):]).items() if k != "usage"}
    assert cut.endswith("}\n\n")
    assert RunningUsage(StreamWants(running=True)).take(event) == event


def test_every_choice_counts_and_each_prompt_once():
    """Two prompts, n=2: choice index = prompt * n + i; prompt tokens once per prompt."""
    running = RunningUsage(StreamWants(choices_per_prompt=2))
    for index, prompt, done in [(0, 5, 1), (1, 5, 1), (2, 9, 1), (0, 5, 2), (3, 9, 1),
                                (0, 5, 3), (2, 9, 2)]:
        running.take(completion_event(index, "x", prompt, done))
    assert running.totals() == (5 + 9, 3 + 1 + 2 + 1)


def test_an_event_of_another_shape_is_forwarded_untouched():
    running = RunningUsage(StreamWants())
    odd = 'data: {"choices":[{"index":"zero"}],"usage":{"prompt_tokens":1}}\n\n'
    cut_short = ('data: {"choices":[{"index":0}],"usage":{"prompt_tokens":1,'
                 '"completion_tokens":\n\n')
    for event in (odd, cut_short, 'data: {"choices":[]}\n\n'):
        assert running.take(event) == event
    assert running.totals() is None
