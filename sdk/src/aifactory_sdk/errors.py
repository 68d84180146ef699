"""The SDK's errors: one tree, each class saying what happened and what to do about it."""

from __future__ import annotations

import builtins
from typing import Any

from aifactory_sdk.types import RateLimit


class AIFactoryError(Exception):
    """Base of every error the SDK raises."""


# Nothing came back from the platform.


class APIConnectionError(AIFactoryError, builtins.ConnectionError):
    """The platform could not be reached, or the connection broke: check the base URL, or retry."""

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


class APITimeoutError(APIConnectionError, builtins.TimeoutError):
    """The request took longer than its timeout: raise the timeout, or retry."""


# The platform answered with an error: `{"error": {"message", "type", "param", "code"}}`.


class APIStatusError(AIFactoryError):
    """An error answer; `status`, `code` (OpenAI's error code) and `request_id` say which.
    `retry_after` is the wait the platform asked for, `rate_limit` the limits it reported."""

    def __init__(self, message: str, *, status: int, code: str | None = None,
                 type: str | None = None, param: str | None = None,
                 request_id: str | None = None, body: Any = None,
                 retry_after: float | None = None, rate_limit: RateLimit | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.type = type
        self.param = param
        self.request_id = request_id
        self.body = body
        self.retry_after = retry_after
        self.rate_limit = rate_limit if rate_limit is not None else RateLimit()

    @property
    def status_code(self) -> int:
        """`status` under openai-python's name."""
        return self.status

    def __str__(self) -> str:
        where = f", request {self.request_id}" if self.request_id else ""
        code = f" {self.code}" if self.code else ""
        return f"{self.status}{code}: {self.message}{where}"


class BadRequestError(APIStatusError):
    """400/413/415/422: the request is malformed or a parameter is invalid (`param` names it)."""


class AuthenticationError(APIStatusError):
    """401: the key is missing, unknown, revoked or expired: pass a valid key."""


class PermissionDeniedError(APIStatusError):
    """403: the key is valid but may not do this (an inference key on the admin API, a
    suspended tenant)."""


class NotFoundError(APIStatusError):
    """404: no such model, tenant, endpoint or key, or one this key may not see."""


class ConflictError(APIStatusError):
    """409: the write conflicts with existing data (a name already taken)."""


class RateLimitError(APIStatusError):
    """429: a per-minute or concurrency limit is reached; waiting `retry_after` seconds helps
    (without it, waiting does not: the request alone exceeds a limit)."""


class QuotaExhaustedError(RateLimitError):
    """429 `insufficient_quota`: the tenant's token budget for the month is spent. Retrying does
    not help until the month turns or an operator raises the quota."""


class UnavailableError(APIStatusError):
    """5xx: the platform or an engine is briefly unavailable; retried automatically."""
