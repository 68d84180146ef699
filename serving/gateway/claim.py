"""What a request claims from its tenant's quotas before the engine has counted anything:
its prompt tokens, estimated, and every token it may generate. Pure functions of the body.

A claim never exceeds what the engine would run (it refuses a larger max_tokens or n), so the
counters never take an absurd number (max_tokens: 2**64 overflowed Redis's integers); and it
counts every prompt of a prompt list and every choice of each, so 1,000 prompts in one
request claim what 1,000 requests would."""

from __future__ import annotations

import math
from enum import Enum
from itertools import zip_longest
from typing import Any

# A prompt's tokens are estimated before the engine tokenizes it (about 4 bytes per token for
# BPE vocabularies, plus a few per chat message for the template); the reservation is settled
# with the engine's exact count when the request ends.
BYTES_PER_TOKEN = 4
TEMPLATE_TOKENS_PER_MESSAGE = 8
MAX_CLAIM_TOKENS = 2**31 - 1
MAX_CHOICES = 16384  # vLLM's default VLLM_MAX_N_SEQUENCES
# The two sides of a score or rerank body, as vLLM names them: queries, then documents.
SCORED_SIDES = (("query", "documents"), ("queries", "documents"), ("queries", "items"),
                ("text_1", "text_2"), ("data_1", "data_2"))


def _size(value: Any) -> int:
    if isinstance(value, str):
        return math.ceil(len(value.encode("utf-8", "replace")) / BYTES_PER_TOKEN)
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)  # already token ids
        return sum(_size(v) for v in value)
    if isinstance(value, dict):
        return sum(_size(v) for v in value.values())
    return 0


def prompt_field(body: dict[str, Any]) -> str:
    """Where a body's prompts are: `prompt` (completions, tokenize), `input` (embeddings)."""
    return "input" if "prompt" not in body and "input" in body else "prompt"


def scored_sides(body: dict[str, Any]) -> tuple[str, str] | None:
    """The fields of a score or rerank body's two sides; None for any other body."""
    if "messages" in body or "prompt" in body or "input" in body:
        return None
    return next((sides for sides in SCORED_SIDES if all(f in body for f in sides)), None)


def _scored_pairs(queries: Any, documents: Any) -> list[list[Any]]:
    """What a scoring model reads: one query and N documents are N (query, document) pairs,
    N queries and N documents N pairs. A cross-encoder reads each pair as one prompt, so
    the query counts once per document; an embedding model reads each text once and is
    claimed a little more than it uses, settled with the engine's count."""
    queries = queries if isinstance(queries, list) else [queries]
    documents = documents if isinstance(documents, list) else [documents]
    if len(queries) == 1:
        queries = queries * len(documents)
    return [[q, d] for q, d in zip_longest(queries, documents, fillvalue="")]


def prompts_of(body: dict[str, Any]) -> list[Any]:
    """The separate prompts a completion (or embedding) body asks for: a string or one list
    of token ids is one prompt; a list of strings or of token-id lists is one prompt each. A
    chat is one; a score or rerank body's pairs are one each."""
    if "messages" in body:
        return [body["messages"]]
    sides = scored_sides(body)
    if sides is not None:
        return _scored_pairs(body[sides[0]], body[sides[1]])
    prompt = body.get(prompt_field(body), "")
    if isinstance(prompt, list) and prompt and not all(isinstance(p, int) for p in prompt):
        return prompt
    return [prompt]


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """All of the request's prompts together."""
    if "messages" in body:
        messages = body["messages"] if isinstance(body["messages"], list) else []
        return _size(messages) + TEMPLATE_TOKENS_PER_MESSAGE * len(messages)
    return sum(_size(p) for p in prompts_of(body))


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def requested_max_tokens(body: dict[str, Any], context_len: int) -> int:
    """What the request may generate: for each prompt, its max_tokens, else what the context
    leaves that prompt (at most the context), for each of its `n` choices. E.g. 3 prompts,
    max_tokens 4, n 2: 3 x 4 x 2 = 24."""
    limit = None
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        limit = _positive_int(body.get(key))
        if limit is not None:
            break
    choices = min(_positive_int(body.get("n")) or 1, MAX_CHOICES)
    if "messages" in body:
        prompts = [estimate_prompt_tokens(body)]
    else:
        prompts = [_size(p) for p in prompts_of(body)]
    total = 0
    for prompt_tokens in prompts:
        if limit is not None:
            per_choice = min(limit, context_len if context_len > 0 else MAX_CLAIM_TOKENS)
        else:
            per_choice = max(1, context_len - prompt_tokens)
        total += per_choice * choices
    return min(total, MAX_CLAIM_TOKENS)


class Claims(Enum):
    """What a kind of request claims from token quotas: its prompt and all it may generate
    (chat, completions), its prompt (embeddings, pooling, score, rerank), or nothing but the
    request (tokenizing)."""

    GENERATION = "generation"
    PROMPT = "prompt"
    NOTHING = "nothing"


def claimed_tokens(claims: Claims, body: dict[str, Any], context_len: int) -> tuple[int, int]:
    """(prompt tokens estimated, tokens it may generate) that a request claims."""
    if claims is Claims.NOTHING:
        return 0, 0
    prompt = estimate_prompt_tokens(body)
    if claims is Claims.PROMPT:
        return prompt, 0
    return prompt, requested_max_tokens(body, context_len)
