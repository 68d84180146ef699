"""Which of vLLM's request models reads a body of each kind: for vLLM's union bodies (/pooling,
/score) the member whose required fields the body has, so an error names the body's field;
and which serving object answers it. vLLM's protocol modules are imported; no engine runs."""

from __future__ import annotations

import pytest

from serving.engine import protocols


@pytest.mark.parametrize(("kind", "body", "model"), [
    ("pooling", {"input": "x"}, "PoolingCompletionRequest"),
    ("pooling", {"messages": []}, "PoolingChatRequest"),
    ("pooling", {"data": {"a": 1}}, "IOProcessorRequest"),
    ("pooling", {"data": 1, "input": "x"}, "PoolingCompletionRequest"),
    ("pooling", {}, "PoolingCompletionRequest"),                    # vLLM's 400 names `input`
    ("score", {"queries": "q", "documents": ["d"]}, "ScoreQueriesDocumentsRequest"),
    ("score", {"queries": "q", "items": ["d"]}, "ScoreQueriesItemsRequest"),
    ("score", {"text_1": "q", "text_2": "d"}, "ScoreTextRequest"),
    ("score", {"data_1": "q"}, "ScoreDataRequest"),                # its 400 names `data_2`
    ("score", {}, "ScoreQueriesDocumentsRequest"),
    ("rerank", {"query": "q", "documents": ["d"]}, "RerankRequest"),
    ("embedding", {"input": "x"}, "EmbeddingCompletionRequest"),
    ("tokenize", {"messages": []}, "TokenizeChatRequest"),
    ("nothing", {}, None),
])
def test_the_request_model_is_the_member_the_body_fills(kind, body, model):
    found = protocols.request_model(kind, body)
    assert (found.__name__ if found is not None else None) == model


def test_every_kind_has_a_serving_object_and_a_name():
    kinds = {protocols.CHAT, protocols.COMPLETION, protocols.TOKENIZE, protocols.DETOKENIZE,
             protocols.EMBEDDING, protocols.RESPONSES, protocols.POOLING, protocols.SCORE,
             protocols.RERANK}
    assert set(protocols.SERVING) == set(protocols.WHAT) == kinds
    assert protocols.SERVING["score"] == protocols.SERVING["rerank"] == "serving_scores"


def test_known_fields_are_the_models_own():
    rerank = protocols.known_fields(protocols.request_model("rerank", {}))
    assert {"model", "query", "documents", "top_n", "cache_salt"} <= rerank
    assert "queries" not in rerank and "normalize" not in rerank


def test_removed_pooling_parameters_are_named_as_vllm_names_them():
    from vllm.exceptions import VLLMValidationError

    with pytest.raises(VLLMValidationError, match="use_activation"):
        protocols.check_before_validation("pooling", {"input": "x", "normalize": True})
    protocols.check_before_validation("rerank", {"normalize": True})  # only /pooling's rule
