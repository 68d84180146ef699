"""The SDK's sans-IO core, shared by `Client` and `AsyncClient`: options, what a call sends,
how a response becomes a result or a typed error, when to retry and how long to wait
(streams are decoded in `_streams`). Nothing here performs I/O."""

from __future__ import annotations

import email.utils
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from aifactory_sdk import errors
from aifactory_sdk.types import LimitState, RateLimit, stamped

try:  # optional: with the OpenTelemetry API present, calls join the caller's trace
    from opentelemetry import propagate as _otel_propagate
except ImportError:  # pragma: no cover - depends on the environment
    _otel_propagate = None

VERSION = "0.1.0"
API_KEY_ENV = "AIFACTORY_API_KEY"
BASE_URL_ENV = "AIFACTORY_BASE_URL"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 2
# A call (all its attempts and the waits between them) starts no new attempt past this.
DEFAULT_DEADLINE_S = 120.0
# Full-jitter backoff: attempt n waits uniform(0, min(MAX, INITIAL * 2**n)) seconds.
INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
# A server asking for a longer wait than this is not waited for: the error is raised at once.
MAX_RETRY_AFTER_S = 60.0
REQUEST_ID_HEADER = "x-request-id"


class NotGiven:
    """Marks an option left out, where None means something (e.g. "clear this limit")."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __bool__(self) -> bool:
        return False


NOT_GIVEN = NotGiven()


@dataclass(frozen=True)
class Options:
    """A client's settings, resolved once when it is made."""

    api_key: str
    base_url: str
    timeout: httpx.Timeout
    max_retries: int
    deadline: float | None
    default_headers: Mapping[str, str] = field(default_factory=dict)

    def changed(self, **changes: Any) -> Options:
        given = {k: v for k, v in changes.items() if not isinstance(v, NotGiven)}
        if "timeout" in given:
            given["timeout"] = _timeout(given["timeout"])
        if "base_url" in given:
            given["base_url"] = _base_url(given["base_url"])
        if "max_retries" in given:
            given["max_retries"] = _max_retries(given["max_retries"])
        if "default_headers" in given:
            given["default_headers"] = {**self.default_headers, **given["default_headers"]}
        return replace(self, **given)


def resolve_options(*, api_key: str | None, base_url: str | None,
                    timeout: float | httpx.Timeout | None, max_retries: int,
                    deadline: float | None, default_headers: Mapping[str, str] | None,
                    environ: Mapping[str, str] = os.environ) -> Options:
    """Arguments first, then AIFACTORY_API_KEY / AIFACTORY_BASE_URL, then the defaults."""
    key = api_key if api_key is not None else environ.get(API_KEY_ENV)
    if not key:
        raise errors.AIFactoryError(
            f"no API key: pass api_key=... or set {API_KEY_ENV} (a key looks like afk_...)")
    if deadline is not None and deadline <= 0:
        raise ValueError(f"deadline must be positive seconds or None, got {deadline!r}")
    return Options(api_key=key,
                   base_url=_base_url(base_url or environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL),
                   timeout=_timeout(timeout), max_retries=_max_retries(max_retries),
                   deadline=deadline, default_headers=dict(default_headers or {}))


def _base_url(url: str) -> str:
    """The platform's root; the OpenAI base URL (".../v1") is accepted too."""
    url = url.rstrip("/")
    return url.removesuffix("/v1")


def _timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive seconds or None, got {timeout!r}")
    return httpx.Timeout(timeout, connect=None if timeout is None else min(timeout, 10.0))


def _max_retries(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"max_retries must be an integer >= 0, got {value!r}")
    return value


# What a call sends


@dataclass(frozen=True)
class Upload:
    """A file sent as one part of a multipart form: its name as shown, and its bytes (held in
    memory, so that a retried attempt sends them again whole)."""

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Call:
    """One API call, before any I/O: where it goes, what it carries, what it returns (`str`
    and `bytes` for a body taken as it is). `chunk` is set for a streamed call: the type of
    each event. A call with `uploads` sends a multipart form: those files, and `form`'s
    fields beside them."""

    method: str
    path: str
    result: type[BaseModel | str | bytes]
    body: Mapping[str, Any] | None = None
    params: Mapping[str, Any] | None = None
    chunk: type[BaseModel] | None = None
    uploads: Mapping[str, Upload] | None = None
    form: Mapping[str, str] | None = None

    @property
    def streams(self) -> bool:
        return self.chunk is not None


def request_args(call: Call, options: Options) -> dict[str, Any]:
    """Arguments for `httpx.Client.build_request`, made afresh for every attempt (so each
    carries the trace context current when it is sent)."""
    headers = {
        "authorization": f"Bearer {options.api_key}",
        "accept": "text/event-stream" if call.streams else "application/json",
        "user-agent": f"aifactory-sdk/{VERSION}",
        **options.default_headers,
    }
    if _otel_propagate is not None:
        _otel_propagate.inject(headers)
    params = None if call.params is None else {k: _param(v) for k, v in call.params.items()
                                               if v is not None}
    args = {"method": call.method, "url": options.base_url + call.path, "headers": headers,
            "json": call.body, "params": params, "timeout": options.timeout}
    if call.uploads is not None:
        args["files"] = {name: (part.filename, part.content, part.content_type)
                         for name, part in call.uploads.items()}
        args["data"] = dict(call.form or {})
    return args


def _param(value: Any) -> str:
    if isinstance(value, timedelta):  # "since 7 days ago"
        value = datetime.now(UTC) - value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# What comes back


def parse_result(call: Call, headers: httpx.Headers, body: bytes) -> Any:
    """A successful response as the call's typed result, stamped with request id and limits."""
    request_id = headers.get(REQUEST_ID_HEADER)
    if call.result is bytes:
        return body
    if call.result is str:
        return body.decode("utf-8")
    try:
        result = call.result.model_validate_json(body)
    except ValidationError as exc:
        raise errors.AIFactoryError(
            f"the platform's answer to {call.method} {call.path} is not a "
            f"{call.result.__name__}: {exc}") from None
    return stamped(result, request_id, rate_limit_from_headers(headers))


def error_from_response(status: int, headers: httpx.Headers, body: bytes) -> errors.APIStatusError:
    """An error answer as the typed error for its status and OpenAI error code."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        payload = None
    detail = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(detail, dict):
        text = body.decode("utf-8", "replace").strip()[:500]
        detail = {"message": text or httpx.codes.get_reason_phrase(status) or "error"}
    return error_for(status, detail, request_id=headers.get(REQUEST_ID_HEADER),
                     retry_after=retry_after_from_headers(headers), body=payload,
                     rate_limit=rate_limit_from_headers(headers))


# OpenAI's error `type` when an event carries no status (a stream that broke after it started).
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "timeout_error": 408,
    "rate_limit_error": 429,
    "server_error": 500,
    "service_unavailable_error": 503,
}


def error_from_event(detail: Mapping[str, Any], request_id: str | None) -> errors.APIStatusError:
    """A `{"error": ...}` event inside a stream; vLLM puts the HTTP status in `code`."""
    code = detail.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else _STATUS_OF_TYPE.get(
        str(detail.get("type")), 500)
    return error_for(status, detail, request_id=request_id, retry_after=None, body=detail)


_ERROR_OF_STATUS: dict[int, type[errors.APIStatusError]] = {
    400: errors.BadRequestError, 401: errors.AuthenticationError,
    403: errors.PermissionDeniedError, 404: errors.NotFoundError, 409: errors.ConflictError,
    413: errors.BadRequestError, 415: errors.BadRequestError, 422: errors.BadRequestError,
    429: errors.RateLimitError,
}


def error_for(status: int, detail: Mapping[str, Any], *, request_id: str | None,
              retry_after: float | None, body: Any,
              rate_limit: RateLimit | None = None) -> errors.APIStatusError:
    code = detail.get("code")
    code = None if code is None or isinstance(code, int) else str(code)
    kind = _ERROR_OF_STATUS.get(status) or (
        errors.UnavailableError if status >= 500 else errors.APIStatusError)
    if status == 429 and code == "insufficient_quota":
        kind = errors.QuotaExhaustedError
    return kind(str(detail.get("message") or httpx.codes.get_reason_phrase(status) or "error"),
                status=status, code=code, type=detail.get("type"), param=detail.get("param"),
                request_id=request_id, body=body, retry_after=retry_after,
                rate_limit=rate_limit)


def connection_error(exc: httpx.TransportError) -> errors.APIConnectionError:
    """httpx's failures mapped to the SDK's, at this one boundary."""
    if isinstance(exc, httpx.TimeoutException):
        return errors.APITimeoutError(f"timed out: {type(exc).__name__} {exc}".strip())
    return errors.APIConnectionError(f"connection failed: {type(exc).__name__} {exc}".strip())


# Rate limits and Retry-After


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float | None:
    """OpenAI's reset durations (Go's format): "20ms" -> 0.02, "6m0s" -> 360, "1h1m1s" ->
    3661, "7.25s" -> 7.25; a bare number is seconds. None when it is neither."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def rate_limit_from_headers(headers: Mapping[str, str]) -> RateLimit:
    def state(name: str) -> LimitState | None:
        limit = headers.get(f"x-ratelimit-limit-{name}")
        remaining = headers.get(f"x-ratelimit-remaining-{name}")
        if limit is None or remaining is None:
            return None
        try:
            reset = headers.get(f"x-ratelimit-reset-{name}")
            return LimitState(limit=int(limit), remaining=int(remaining),
                              reset_seconds=None if reset is None else parse_duration(reset))
        except ValueError:
            return None

    return RateLimit(requests=state("requests"), tokens=state("tokens"))


def retry_after_from_headers(headers: Mapping[str, str],
                             now: Callable[[], float] = time.time) -> float | None:
    """The wait a server asked for: `retry-after-ms`, else `retry-after` in seconds or as an
    HTTP date. None when absent or unreadable."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    text = headers.get("retry-after")
    if text is None:
        return None
    try:
        value = float(text)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now())


# Retries


def retryable(error: errors.AIFactoryError) -> bool:
    """Worth another attempt: a connection failure or timeout, or 408/409/429/5xx. A spent
    monthly budget is not: it does not come back by waiting. A 429 without Retry-After (a
    concurrency limit: no one knows when a slot frees) is retried with backoff."""
    if isinstance(error, errors.QuotaExhaustedError):
        return False
    if isinstance(error, errors.APIConnectionError):
        return True
    if isinstance(error, errors.APIStatusError):
        return error.status in (408, 409, 429) or error.status >= 500
    return False


def retry_delay(error: errors.AIFactoryError, retries_done: int, *, max_retries: int,
                elapsed: float, deadline: float | None,
                jitter: Callable[[], float]) -> float | None:
    """Seconds to wait before the next attempt, or None to raise `error` now.

    E.g. a 503 without Retry-After after 1 retry: wait jitter() * min(8, 0.5 * 2**1), i.e.
    up to 1 s; a 429 with Retry-After: 3 waits exactly 3 s. No wait may end past the
    deadline, counted from the call's first attempt."""
    if retries_done >= max_retries or not retryable(error):
        return None
    asked = error.retry_after if isinstance(error, errors.APIStatusError) else None
    if asked is None:
        wait = jitter() * min(MAX_BACKOFF_S, INITIAL_BACKOFF_S * 2 ** retries_done)
    elif asked > MAX_RETRY_AFTER_S:
        return None
    else:
        wait = asked
    if deadline is not None and elapsed + wait > deadline:
        return None
    return wait
