"""The shape a body must have before admission counts it: the fields the gateway itself reads
(what it claims from the quotas, whether it streams) are checked here; everything else is
vLLM's to validate. A pure function: the pipeline turns its answer into a 400."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serving.engine.adapters import ADAPTER_FIELD
from serving.gateway.claim import prompt_field, prompts_of, scored_sides


@dataclass(frozen=True)
class RequestLimits:
    """Bounds on one request body. `max_prompts`: prompts in one completion request
    (OpenAI's batch limit); `max_json_depth`: nesting of objects and lists, far beyond any
    tool schema, far below what recursive validators survive."""

    max_prompts: int = 2048
    max_json_depth: int = 64
    # How long a stored Responses API response is kept (OpenAI keeps them 30 days).
    response_retention_s: float = 30 * 86400.0


@dataclass(frozen=True)
class BadShape:
    message: str
    param: str | None


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether objects and lists nest deeper than `limit` (iteratively: no recursion here)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def bad_shape(body: dict[str, Any], limits: RequestLimits) -> BadShape | None:
    if json_depth_exceeds(body, limits.max_json_depth):
        return BadShape(f"request body is nested deeper than {limits.max_json_depth} levels",
                        None)
    if ADAPTER_FIELD in body:
        # The gateway's word to the engine on where an adapter lies; a client's would name
        # any folder on the engine's node.
        return BadShape(f"Unrecognized request argument supplied: {ADAPTER_FIELD}",
                        ADAPTER_FIELD)
    salt = body.get("cache_salt")
    if salt is not None and not (isinstance(salt, str) and 0 < len(salt) <= 128):
        return BadShape("cache_salt must be a string of 1 to 128 characters", "cache_salt")
    if body.get("priority", 0) != 0:
        # vLLM's scheduling priority is the platform's to set (batch lines after interactive
        # requests); a client's would let it jump every other tenant's queue.
        return BadShape("priority is set by the platform; leave it out", "priority")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        return BadShape("stream_options must be an object, e.g. {\"include_usage\": true}",
                        "stream_options")
    if "messages" not in body:
        # A score or rerank body's prompts are its pairs: as many as its longer side.
        fields = scored_sides(body) or (prompt_field(body),)
        for field in fields:
            prompt = body.get(field)
            if isinstance(prompt, list) and not prompt:
                return BadShape(f"{field} must not be an empty list", field)
        count = len(prompts_of(body))
        if count > limits.max_prompts:
            return BadShape(f"at most {limits.max_prompts} prompts per request, got {count}",
                            fields[-1])
    return None
