"""The kinds of request an engine answers, and for each the vLLM request model that reads its
body and the vLLM serving object that answers it, as `vllm serve` pairs them.

vLLM's routes take some bodies as unions (`/pooling`: a prompt, chat messages or a plugin's
`data`; `/score`: two of `queries`/`documents`/`items`, `text_1`/`text_2`, `data_1`/`data_2`).
Here the member is picked by the fields that member requires, so that a validation error
names the body's own field (a union's error would name the member's class)."""

from __future__ import annotations

import functools
from typing import Any

CHAT = "chat"
COMPLETION = "completion"
TOKENIZE = "tokenize"
DETOKENIZE = "detokenize"
EMBEDDING = "embedding"
RESPONSES = "responses"
POOLING = "pooling"
SCORE = "score"
RERANK = "rerank"

# The serving object each kind needs, as vLLM's app state names it: a pooling model has no
# chat or completion serving, a generating one no pooling serving; a pooling model scores
# only when vLLM enables its score API for it (an embedding model, or a classifier of one
# label), else it has no `serving_scores`.
SERVING = {CHAT: "openai_serving_chat", COMPLETION: "openai_serving_completion",
           TOKENIZE: "serving_tokenization", DETOKENIZE: "serving_tokenization",
           EMBEDDING: "serving_embedding", RESPONSES: "openai_serving_responses",
           POOLING: "serving_pooling", SCORE: "serving_scores", RERANK: "serving_scores"}
WHAT = {CHAT: "chat completions", COMPLETION: "completions", EMBEDDING: "embeddings",
        TOKENIZE: "tokenization", DETOKENIZE: "tokenization", RESPONSES: "responses",
        POOLING: "pooling", SCORE: "scoring", RERANK: "reranking"}
# Kinds served by vLLM's pooling servings, which answer with a finished HTTP response.
POOLING_KINDS = frozenset({EMBEDDING, POOLING, SCORE, RERANK})
# vLLM's binary encodings answer with a byte stream, which the gateway does not relay.
BINARY_ENCODINGS = frozenset({"bytes", "bytes_only"})


def _score_request(body: dict[str, Any]) -> type:
    from vllm.entrypoints.pooling.scoring.protocol import (
        ScoreDataRequest,
        ScoreQueriesDocumentsRequest,
        ScoreQueriesItemsRequest,
        ScoreTextRequest,
    )

    if "items" in body:
        return ScoreQueriesItemsRequest
    if "text_1" in body or "text_2" in body:
        return ScoreTextRequest
    if "data_1" in body or "data_2" in body:
        return ScoreDataRequest
    return ScoreQueriesDocumentsRequest  # the form vLLM documents first


def _pooling_request(body: dict[str, Any]) -> type:
    from vllm.entrypoints.pooling.pooling.protocol import (
        IOProcessorRequest,
        PoolingChatRequest,
        PoolingCompletionRequest,
    )

    if "messages" in body:
        return PoolingChatRequest
    if "data" in body and "input" not in body:
        return IOProcessorRequest  # an IO processor plugin's input (vLLM refuses it without)
    return PoolingCompletionRequest


def request_model(kind: str, body: dict[str, Any]) -> type | None:
    """vLLM's request model for a body of a kind; None for a kind there is none of."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.entrypoints.pooling.embed.protocol import (
        EmbeddingChatRequest,
        EmbeddingCompletionRequest,
    )
    from vllm.entrypoints.serve.tokenize.protocol import (
        DetokenizeRequest,
        TokenizeChatRequest,
        TokenizeCompletionRequest,
    )

    if kind == TOKENIZE:
        return TokenizeChatRequest if "messages" in body else TokenizeCompletionRequest
    if kind == EMBEDDING:
        return EmbeddingChatRequest if "messages" in body else EmbeddingCompletionRequest
    if kind == POOLING:
        return _pooling_request(body)
    if kind == SCORE:
        return _score_request(body)
    if kind == RERANK:
        from vllm.entrypoints.pooling.scoring.protocol import RerankRequest

        return RerankRequest
    if kind == RESPONSES:
        from vllm.entrypoints.openai.responses.protocol import ResponsesRequest

        return ResponsesRequest
    return {CHAT: ChatCompletionRequest, COMPLETION: CompletionRequest,
            DETOKENIZE: DetokenizeRequest}.get(kind)


def check_before_validation(kind: str, body: dict[str, Any]) -> None:
    """What vLLM's route checks before its model reads the body: /pooling names the removed
    parameters (`normalize`, `task: "score"`) rather than calling them unknown."""
    if kind == POOLING:
        from vllm.entrypoints.pooling.base.protocol import (
            reject_removed_pooling_parameters,
        )

        reject_removed_pooling_parameters(body)


@functools.cache
def known_fields(protocol: type) -> frozenset[str]:
    """The fields (and their aliases) a request model reads."""
    names = set(protocol.model_fields)
    for field in protocol.model_fields.values():
        for alias in (field.alias, field.validation_alias):
            if isinstance(alias, str):
                names.add(alias)
    return frozenset(names)
