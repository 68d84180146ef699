"""What a request claims from its quotas before the engine counts: bounded by what the engine
would run, whatever the body asks (fuzzing sent max_tokens 2**64, which overflowed the
Redis counters into a 503), and counting every prompt of a prompt list."""

from __future__ import annotations

import pytest

from serving.gateway.claim import (
    MAX_CHOICES,
    MAX_CLAIM_TOKENS,
    estimate_prompt_tokens,
    requested_max_tokens,
)
from serving.gateway.shape import RequestLimits, bad_shape, json_depth_exceeds

P = "x" * 48  # 48 bytes: 12 tokens by the estimate


@pytest.mark.parametrize("body,context,claim", [
    ({"prompt": P}, 512, 500),                                  # what the context leaves
    ({"prompt": P, "max_tokens": 7}, 512, 7),
    ({"prompt": P, "max_completion_tokens": 5, "max_tokens": 9}, 512, 5),
    ({"prompt": P, "max_tokens": 10**12}, 512, 512),              # never beyond the context
    ({"prompt": P, "max_tokens": 2**64}, 0, MAX_CLAIM_TOKENS),    # context unknown: a ceiling
    ({"prompt": P, "max_tokens": 4, "n": 3}, 512, 12),            # every choice generates
    ({"prompt": P, "max_tokens": 4, "n": 10**9}, 512, 4 * MAX_CHOICES),
    ({"prompt": P, "max_tokens": True, "n": "3"}, 512, 500),      # mistyped: vLLM refuses them
    ({"prompt": P, "max_tokens": -1, "n": 0}, 512, 500),
    # A prompt list claims for every prompt: 3 prompts x 4 tokens x 2 choices = 24.
    ({"prompt": [P, P, P], "max_tokens": 4, "n": 2}, 512, 24),
    # Without max_tokens each prompt may fill what the context leaves it: 500 + 506.
    ({"prompt": [P, "x" * 24]}, 512, 500 + 506),
    ({"prompt": [[1, 2, 3], [4, 5]], "max_tokens": 4}, 512, 8),   # token-id lists, one each
    ({"prompt": [1, 2, 3], "max_tokens": 4}, 512, 4),             # one prompt of token ids
    ({"prompt": [P] * 1000, "max_tokens": 16}, 512, 16_000),      # not what one prompt claims
    ({"messages": [{"role": "user", "content": P}], "max_tokens": 4, "n": 2}, 512, 8),
])
def test_claim(body, context, claim):
    assert requested_max_tokens(body, context) == claim


def test_every_prompt_is_estimated():
    assert estimate_prompt_tokens({"prompt": P}) == 12
    assert estimate_prompt_tokens({"prompt": [P, P, [1, 2, 3]]}) == 12 + 12 + 3
    assert estimate_prompt_tokens({"messages": [{"role": "user", "content": P}]}) == 13 + 8


@pytest.mark.parametrize("body,param", [
    ({"prompt": [P] * 2049}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": P, "stream": True, "stream_options": "yes"}, "stream_options"),
    ({"prompt": P, "stream_options": [1]}, "stream_options"),
    ({"prompt": P, "cache_salt": ""}, "cache_salt"),
    ({"prompt": P, "cache_salt": 7}, "cache_salt"),
    ({"prompt": P, "cache_salt": "s" * 129}, "cache_salt"),
    ({"prompt": P, "priority": -100}, "priority"),  # would jump every tenant's queue
    ({"prompt": P, "priority": 5}, "priority"),
    ({"prompt": P, "priority": "0"}, "priority"),
    ({"messages": [{"role": "user", "content": {"a": {"b": {"c": {}}}}}]}, None),
])
def test_bodies_the_gateway_cannot_count_are_refused(body, param):
    limits = RequestLimits(max_prompts=2048, max_json_depth=5)
    bad = bad_shape(body, limits)
    assert bad is not None and bad.param == param


def test_bodies_within_the_limits_pass():
    limits = RequestLimits()
    assert bad_shape({"prompt": [P] * 2048, "stream_options": {"include_usage": True}},
                     limits) is None
    assert bad_shape({"messages": [{"role": "user", "content": "hi"}],
                      "stream_options": None}, limits) is None
    assert bad_shape({"prompt": P, "priority": 0}, limits) is None  # vLLM's default, harmless


def test_json_depth_is_measured_without_recursion():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert json_depth_exceeds(deep, 64)
    assert not json_depth_exceeds({"a": [{"b": 1}]}, 3)
    assert json_depth_exceeds({"a": [{"b": []}]}, 3)


def test_each_kind_claims_what_it_costs():
    from serving.gateway.claim import Claims, claimed_tokens

    completion = {"prompt": "x" * 40, "max_tokens": 7, "n": 2}
    embedding = {"input": ["x" * 40, "y" * 8, [5, 6, 7]]}
    assert claimed_tokens(Claims.GENERATION, completion, 512) == (10, 14)
    assert claimed_tokens(Claims.PROMPT, embedding, 512) == (10 + 2 + 3, 0)
    assert claimed_tokens(Claims.NOTHING, completion, 512) == (0, 0)


def test_an_embeddings_input_list_is_one_prompt_each_and_capped():
    from serving.gateway.claim import prompts_of
    from serving.gateway.shape import RequestLimits, bad_shape

    assert len(prompts_of({"input": ["a", "b", [1, 2]]})) == 3
    assert len(prompts_of({"input": [1, 2, 3]})) == 1
    assert bad_shape({"input": []}, RequestLimits()).param == "input"
    assert bad_shape({"input": ["a"] * 3000}, RequestLimits()).param == "input"
    assert bad_shape({"input": ["a"] * 2048}, RequestLimits()) is None


@pytest.mark.parametrize("body,pairs,tokens", [
    # One query and N documents are N pairs, the query counted in each: 3 x (12 + 2) = 42.
    ({"query": P, "documents": ["x" * 8] * 3}, 3, 42),
    ({"queries": P, "documents": "x" * 8}, 1, 14),
    ({"queries": [P, P], "items": ["x" * 8, "y" * 8]}, 2, 28),    # N:N, each once
    ({"text_1": [P], "text_2": ["x" * 8, "y" * 8]}, 2, 28),       # 1 in a list is still 1:N
    ({"data_1": P, "data_2": [{"content": [{"type": "text", "text": "x" * 8}]}]}, 1, 12 + 1 + 2),
    ({"query": P}, 1, 0),                                         # not a score body: vLLM's 400
])
def test_a_score_or_rerank_body_claims_every_pair(body, pairs, tokens):
    from serving.gateway.claim import Claims, claimed_tokens, prompts_of

    assert len(prompts_of(body)) == pairs
    assert claimed_tokens(Claims.PROMPT, body, 512) == (tokens, 0)


@pytest.mark.parametrize("body,param", [
    ({"query": P, "documents": []}, "documents"),
    ({"queries": [], "documents": [P]}, "queries"),
    ({"query": P, "documents": [P] * 2049}, "documents"),
    ({"queries": [P] * 2049, "documents": [P] * 2049}, "documents"),
    ({"text_1": P, "text_2": [P] * 3000}, "text_2"),
])
def test_a_score_or_rerank_body_has_at_most_as_many_pairs_as_prompts(body, param):
    assert bad_shape(body, RequestLimits()).param == param


def test_a_score_or_rerank_body_within_the_limit_passes():
    assert bad_shape({"query": P, "documents": [P] * 2048}, RequestLimits()) is None
    assert bad_shape({"queries": [P] * 2048, "documents": [P] * 2048}, RequestLimits()) is None
