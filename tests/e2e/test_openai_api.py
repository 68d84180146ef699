"""The OpenAI API through the official `openai` client, sync and async, streamed and not, on
an endpoint inside the gateway replica and on one behind an engine deployment."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.conftest import ALL_ENDPOINTS, ENDPOINTS

MESSAGES = [{"role": "user", "content": "Say something about licences."}]


def test_models_lists_every_endpoint(client):
    models = {m.id: m for m in client.models.list()}
    assert sorted(models) == sorted(ALL_ENDPOINTS)
    assert all(m.object == "model" for m in models.values())
    assert models["demo"].model_extra["max_model_len"] == 512


@pytest.mark.parametrize("model", ENDPOINTS)
def test_chat_completion(client, model):
    resp = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=12,
                                          temperature=0)
    assert resp.object == "chat.completion"
    assert resp.model == model
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("length", "stop")
    assert 0 < resp.usage.completion_tokens <= 12
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


@pytest.mark.parametrize("model", ENDPOINTS)
def test_chat_stream_with_usage(client, model):
    stream = client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=10, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 10
    assert chunks[0].choices[0].delta.role == "assistant"
    assert any(c.choices and c.choices[0].finish_reason == "length" for c in chunks)
    assert text  # noise, but real tokens


@pytest.mark.parametrize("model", ENDPOINTS)
def test_completion_stop_sequence_and_logprobs(client, model, tokenizer):
    first = client.completions.create(model=model, prompt="The licence", max_tokens=8,
                                      temperature=0, logprobs=2)
    assert len(first.choices[0].logprobs.tokens) == first.usage.completion_tokens
    assert all(len(top) <= 3 for top in first.choices[0].logprobs.top_logprobs)
    # Stop on the third generated token's text: the output must end before it.
    third = first.choices[0].logprobs.tokens[2]
    if third.strip():
        stopped = client.completions.create(model=model, prompt="The licence", max_tokens=8,
                                            temperature=0, stop=[third])
        assert stopped.choices[0].finish_reason == "stop"
        assert third not in stopped.choices[0].text


@pytest.mark.parametrize("model", ENDPOINTS)
def test_completion_stream(client, model):
    stream = client.completions.create(model=model, prompt="hello", max_tokens=6, stream=True,
                                       stream_options={"include_usage": True},
                                       extra_body={"ignore_eos": True})
    chunks = list(stream)
    pieces = [c.choices[0].text for c in chunks if c.choices]
    # vLLM merges the tokens of a stream whose reader lags (a busy machine) into one event:
    # count the tokens in the usage chunk, not the events (a CI run saw 5 events for 6).
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert pieces and "".join(pieces)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


async def test_async_client_stream_and_not(async_client):
    resp = await async_client.completions.create(model="demo", prompt="abc", max_tokens=5,
                                                  extra_body={"ignore_eos": True})
    assert resp.usage.completion_tokens == 5
    stream = await async_client.chat.completions.create(
        model="demo-remote", messages=MESSAGES, max_tokens=5, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )
    n, usage = 0, None
    async for chunk in stream:
        n += bool(chunk.choices and chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    # vLLM merges the tokens of a stream whose reader lags (a busy machine) into one event:
    # count the tokens, not the events.
    assert usage.completion_tokens == 5
    assert n >= 1


@pytest.mark.parametrize("model", ENDPOINTS)
async def test_32_concurrent_streams_report_exact_usage(async_client, tokenizer, model):
    prompts = [f"request number {i} asks about the licence terms" for i in range(32)]

    async def one(i: int):
        stream = await async_client.completions.create(
            model=model, prompt=prompts[i], max_tokens=16 + i, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
        )
        usage, n_chunks = None, 0
        async for chunk in stream:
            n_chunks += bool(chunk.choices)
            usage = chunk.usage or usage
        return usage, n_chunks

    results = await asyncio.gather(*(one(i) for i in range(32)))
    for i, (usage, n_chunks) in enumerate(results):
        assert usage.completion_tokens == 16 + i
        assert usage.prompt_tokens == len(tokenizer(prompts[i])["input_ids"])
        assert n_chunks >= 1


def test_status_shows_endpoints_replicas_and_readiness(platform):
    from tests.e2e.conftest import aifactory

    result = aifactory("status", "--json", env=platform["env"], timeout=120)
    assert result.returncode == 0, result.stderr
    status = __import__("json").loads(result.stdout)
    assert status["ready"] is True
    assert status["url"] == platform["url"]
    assert status["endpoints"] == {e: True for e in ALL_ENDPOINTS}
    assert status["deployments"]["gateway"]["replicas"] == {"RUNNING": 1}
    assert status["deployments"]["engine-demo-remote"]["status"] == "HEALTHY"


def test_status_shows_each_engine_start_phase_by_phase(platform):
    """Every engine replica published its start: the phases of its own process and, through
    the vLLM plugin, of vLLM's engine process (weights, KV cache), in order, each timed."""
    from tests.e2e.conftest import aifactory

    result = aifactory("status", "--json", env=platform["env"], timeout=120)
    assert result.returncode == 0, result.stderr
    starts = __import__("json").loads(result.stdout)["starts"]
    # demo is colocated: the gateway replica starts its engine. Other tests' replicas (a
    # created endpoint, an engine killed and replaced) may be there too.
    ready = {s["deployment"]: s for s in starts if s["app"] == "aifactory" and s["ready"]}
    assert {"gateway", "engine-demo-remote", "engine-demo-embed"} <= set(ready), starts
    engine_phases = ["process", "engine process", "weights", "kv cache", "serving layer"]
    for start in starts:
        if not start["ready"]:
            continue
        assert start["phase"] == "ready", start
        linked = [] if start["deployment"] == "gateway" else ["linking"]
        assert list(start["phases"]) == engine_phases + linked, start
        assert all(seconds >= 0 for seconds in start["phases"].values()), start
        assert start["phases"]["weights"] > 0 and start["phases"]["kv cache"] > 0, start
    assert ready["engine-demo-remote"]["endpoint"] == "demo-remote"
    text = aifactory("status", env=platform["env"], timeout=120)
    assert "engine-demo-remote" in text.stdout and "ready, started in" in text.stdout
