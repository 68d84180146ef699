"""Bodies as OpenAI's published schema has them, made once here for every route: vLLM answers
with nulls where the spec allows only an object or nothing (`annotations`,
`function_call`, `*_tokens_details`, ...) and with its own fields set to null
(`kv_transfer_params`, `prompt_text`, `token_ids`, ...). A field that is null is dropped unless
the spec requires it (then null is its declared value); a chat `logprobs` object gets its
required `refusal`. Fields a client asked vLLM for (`token_ids` with `return_token_ids`, ...)
are not null and stay: the spec allows more fields than it names. Pure functions."""

from __future__ import annotations

import json
import re
from typing import Any

# Required by the spec where they appear, and null there by definition: the message's
# `content` and `refusal`, a choice's `logprobs` and (streamed) `finish_reason`, a token's
# `bytes`.
REQUIRED_NULLS = frozenset({"content", "refusal", "logprobs", "finish_reason", "bytes"})

# vLLM's null fields in stream events, as its compact JSON writes them; never inside a
# string value, where a quote is escaped.
_NULL_EXTENSIONS = tuple(f',"{name}":null' for name in (
    "stop_reason", "token_ids", "prompt_token_ids", "prompt_text", "routed_experts",
    "prompt_logprobs", "kv_transfer_params", "ec_transfer_params"))
_CHAT_LOGPROBS = '"logprobs":{"content":'
# vLLM streams an echoed prompt's token ids though the client asked only for `echo`.
_PROMPT_TOKEN_IDS = re.compile(r',"prompt_token_ids":\[[0-9,]*\]')


def shaped(value: Any) -> Any:
    """`value` (a response body or a part of one) without nulls the spec does not allow."""
    if isinstance(value, list):
        return [shaped(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {key: shaped(item) for key, item in value.items()
           if item is not None or key in REQUIRED_NULLS}
    logprobs = out.get("logprobs")
    if isinstance(logprobs, dict) and "content" in logprobs and "refusal" not in logprobs:
        out["logprobs"] = {**logprobs, "refusal": None}
    return out


def shaped_event(event: str, token_ids: bool = False) -> str:
    """A stream event (`data: {...}\\n\\n`) as `shaped` would make its body: the cheap way
    (a few substring replacements) unless the event carries chat logprobs. `token_ids`:
    the client asked for them (`return_token_ids`)."""
    for null in _NULL_EXTENSIONS:
        if null in event:
            event = event.replace(null, "")
    if not token_ids and '"prompt_token_ids":[' in event:
        event = _PROMPT_TOKEN_IDS.sub("", event)
    if _CHAT_LOGPROBS not in event:
        return event
    try:
        body = json.loads(event[len("data: "):])
    except ValueError:
        return event
    return f"data: {json.dumps(shaped(body), separators=(',', ':'), ensure_ascii=False)}\n\n"
