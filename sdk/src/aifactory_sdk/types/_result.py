"""What every result carries beside its fields: the request id and the rate-limit state of
the response it came in."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

# Rate limits, from OpenAI's x-ratelimit-* response headers


class LimitState(BaseModel):
    """One limit as the platform last reported it: e.g. 600 requests per minute, 598 left,
    the window resets in 1.5 s."""

    limit: int
    remaining: int
    reset_seconds: float | None = None


class RateLimit(BaseModel):
    """The limits set for the caller (None: unlimited, or not reported on this response)."""

    requests: LimitState | None = None
    tokens: LimitState | None = None


class Result(BaseModel):
    """Any result: its fields, plus `request_id` and `rate_limit` from the response headers.
    Fields the platform adds later are kept, not refused."""

    model_config = ConfigDict(extra="allow")
    _request_id: str | None = PrivateAttr(default=None)
    _rate_limit: RateLimit = PrivateAttr(default_factory=RateLimit)

    @property
    def request_id(self) -> str | None:
        return self._request_id

    @property
    def rate_limit(self) -> RateLimit:
        return self._rate_limit



def stamped(result: Any, request_id: str | None, rate_limit: RateLimit) -> Any:
    """The result with the response's request id and rate-limit state attached."""
    if isinstance(result, Result):
        result._request_id = request_id
        result._rate_limit = rate_limit
    return result
