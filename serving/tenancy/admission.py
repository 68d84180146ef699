"""Admission: the pure decision whether one request may start now, and its rate-limit headers."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

# Rate limits count in fixed 60 s windows keyed by floor(now / 60): one integer per counter,
# so several gateway replicas can check-and-increment it atomically in one Redis call, and
# "reset" has one exact answer (the end of the window). The price is a burst of up to twice
# the limit across a window boundary, which per-minute quotas tolerate.
WINDOW_S = 60


def window_of(now: float) -> int:
    """The fixed minute window `now` (epoch seconds) falls in."""
    return int(now // WINDOW_S)


def month_of(now: float) -> int:
    """The calendar month (UTC) of `now` as yyyymm, e.g. 202503."""
    moment = datetime.fromtimestamp(now, UTC)
    return moment.year * 100 + moment.month


def month_end(now: float) -> float:
    """Epoch seconds at which the calendar month (UTC) of `now` ends."""
    moment = datetime.fromtimestamp(now, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return datetime(year, month, 1, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Limits:
    """One quota; None means unlimited. Values are validated where quotas are stored."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None
    tokens_per_month: int | None = None


@dataclass(frozen=True)
class Usage:
    """Counters of one quota's scope. Minute counts belong to `window`, month tokens to
    `month`; counts from any other window or month than now's are stale and read as zero."""

    window: int | None = None
    requests: int = 0
    tokens: int = 0
    in_flight: int = 0
    month: int | None = None
    month_tokens: int = 0

    @classmethod
    def at(cls, now: float, *, requests: int = 0, tokens: int = 0, in_flight: int = 0,
           month_tokens: int = 0) -> Usage:
        """Counts taken in the window and month of `now`."""
        return cls(window_of(now), requests, tokens, in_flight, month_of(now), month_tokens)

    def current(self, now: float) -> Usage:
        """These counts with the stale ones zeroed: a later `now` is how windows roll over."""
        fresh_window = self.window == window_of(now)
        fresh_month = self.month == month_of(now)
        return Usage(
            window_of(now),
            self.requests if fresh_window else 0,
            self.tokens if fresh_window else 0,
            self.in_flight,
            month_of(now),
            self.month_tokens if fresh_month else 0,
        )


@dataclass(frozen=True)
class AdmissionRequest:
    """What one request claims: its prompt plus its `max_tokens`, reserved until it ends."""

    prompt_tokens: int
    max_tokens: int

    def __post_init__(self) -> None:
        if self.prompt_tokens < 0 or self.max_tokens < 0:
            raise ValueError("prompt_tokens and max_tokens must be >= 0")

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.max_tokens


class Limit(StrEnum):
    """Which limit refused a request, in the order they are reported."""

    INSUFFICIENT_QUOTA = "insufficient_quota"  # the monthly token budget: not a rate limit
    REQUEST_TOO_LARGE = "request_too_large"  # the reservation exceeds tokens per minute itself
    CONCURRENCY = "concurrent_requests"
    REQUESTS = "requests_per_minute"
    TOKENS = "tokens_per_minute"


@dataclass(frozen=True)
class RateWindow:
    """One limit/remaining/reset triple of OpenAI's rate-limit headers."""

    limit: int
    remaining: int
    reset_s: float


@dataclass(frozen=True)
class Decision:
    """Whether a request may start, which limits refused it and what to tell the client."""

    admitted: bool
    refused: tuple[Limit, ...]
    reason: str
    retry_after_s: float | None
    reserved_tokens: int
    requests: RateWindow | None = None
    tokens: RateWindow | None = None

    @property
    def refused_by(self) -> Limit | None:
        return self.refused[0] if self.refused else None

    @property
    def insufficient_quota(self) -> bool:
        """The monthly budget is spent: OpenAI's `insufficient_quota`, not a rate limit."""
        return self.refused_by is Limit.INSUFFICIENT_QUOTA

    @property
    def error_code(self) -> str | None:
        """OpenAI's error `code` for a refusal: `insufficient_quota` or `rate_limit_exceeded`."""
        if self.admitted:
            return None
        return "insufficient_quota" if self.insufficient_quota else "rate_limit_exceeded"

    def headers(self) -> dict[str, str]:
        """OpenAI's `x-ratelimit-*` headers for the limits that are set, plus `retry-after`
        (and `retry-after-ms`, which openai-python prefers) when waiting will help."""
        out: dict[str, str] = {}
        for name, triple in (("requests", self.requests), ("tokens", self.tokens)):
            if triple is not None:
                out[f"x-ratelimit-limit-{name}"] = str(triple.limit)
                out[f"x-ratelimit-remaining-{name}"] = str(triple.remaining)
                out[f"x-ratelimit-reset-{name}"] = format_reset(triple.reset_s)
        if not self.admitted and self.retry_after_s is not None:
            out["retry-after"] = str(math.ceil(self.retry_after_s))
            out["retry-after-ms"] = str(math.ceil(self.retry_after_s * 1000))
        return out


def format_reset(seconds: float) -> str:
    """A duration as OpenAI writes resets, Go's style: 0.02 -> "20ms", 1 -> "1s",
    360 -> "6m0s", 7.25 -> "7.25s", 3661 -> "1h1m1s"."""
    ms = max(0, round(seconds * 1000))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return f"{out}{secs}s"


def effective(scopes: Iterable[tuple[Limits, Usage]], request: AdmissionRequest,
              now: float) -> tuple[Limits, Usage]:
    """Fold the tenant's and the (tenant, endpoint) quota into the one `admit` checks.

    Each scope has its own counters, so "the stricter" is per limit the scope with the least
    remaining: used + ask <= limit holds for that scope exactly when it holds for all of them.
    E.g. tenant 100 rpm with 90 used, endpoint 20 rpm with 5 used: 10 left beats 15 left, so
    the tenant's (100, 90) is the effective pair and its numbers go to the headers. A scope whose
    tokens-per-minute limit is below the reservation itself comes first, so the refusal reads
    "request too large" rather than a wait that can never help.
    """
    pairs = [(limits, usage.current(now)) for limits, usage in scopes]
    rpm, requests = _stricter(pairs, "requests_per_minute", "requests")
    tpm, tokens = _stricter(pairs, "tokens_per_minute", "tokens", too_large=request.tokens)
    conc, in_flight = _stricter(pairs, "concurrent_requests", "in_flight")
    budget, month_tokens = _stricter(pairs, "tokens_per_month", "month_tokens")
    return (Limits(rpm, tpm, conc, budget),
            Usage(window_of(now), requests, tokens, in_flight, month_of(now), month_tokens))


def _stricter(pairs: list[tuple[Limits, Usage]], limit_name: str, used_name: str,
              too_large: int | None = None) -> tuple[int | None, int]:
    """The (limit, used) of the scope with the least left; (None, 0) when none sets it."""
    candidates = [(getattr(limits, limit_name), getattr(usage, used_name))
                  for limits, usage in pairs if getattr(limits, limit_name) is not None]
    if not candidates:
        return None, 0
    return min(candidates, key=lambda lu: (
        not (too_large is not None and lu[0] < too_large), lu[0] - lu[1], lu[0]))


def admit(limits: Limits, usage: Usage, request: AdmissionRequest, now: float) -> Decision:
    """Admit the request when every set limit still holds with it counted:
    used + 1 <= requests and concurrency limits, used + reservation <= token limits.

    The same rule runs atomically inside the Redis counters' Lua script; keep them in step.
    """
    use = usage.current(now)
    ask = request.tokens
    reset_s = (window_of(now) + 1) * WINDOW_S - now
    refused: list[Limit] = []
    reasons: list[str] = []
    waits: list[float] = []

    budget = limits.tokens_per_month
    if budget is not None and use.month_tokens + ask > budget:
        refused.append(Limit.INSUFFICIENT_QUOTA)
        reasons.append(f"monthly token budget {budget} has {max(0, budget - use.month_tokens)} "
                       f"left, the request reserves {ask}")
    tpm = limits.tokens_per_minute
    if tpm is not None and ask > tpm:
        refused.append(Limit.REQUEST_TOO_LARGE)
        reasons.append(f"the request reserves {ask} tokens, more than the limit of {tpm} "
                       "tokens per minute; lower max_tokens or the prompt")
    conc = limits.concurrent_requests
    if conc is not None and use.in_flight + 1 > conc:
        refused.append(Limit.CONCURRENCY)
        reasons.append(f"{use.in_flight} requests in flight, limit {conc}")
    rpm = limits.requests_per_minute
    if rpm is not None and use.requests + 1 > rpm:
        refused.append(Limit.REQUESTS)
        reasons.append(f"limit {rpm} requests per minute reached")
        waits.append(reset_s)
    if tpm is not None and ask <= tpm and use.tokens + ask > tpm:
        refused.append(Limit.TOKENS)
        reasons.append(f"{use.tokens} of {tpm} tokens per minute used, the request reserves {ask}")
        waits.append(reset_s)

    admitted = not refused
    # Waiting helps only a rate limit: the budget needs a new month or a larger budget, a
    # too-large request never fits, and a concurrency slot frees at no time we can know (the
    # client's own backoff then applies).
    hopeless = {Limit.INSUFFICIENT_QUOTA, Limit.REQUEST_TOO_LARGE}
    retry_after = max(waits) if waits and not hopeless.intersection(refused) else None
    return Decision(
        admitted=admitted,
        refused=tuple(refused),
        reason="admitted" if admitted else "; ".join(reasons),
        retry_after_s=retry_after,
        reserved_tokens=ask if admitted else 0,
        requests=None if rpm is None else RateWindow(
            rpm, max(0, rpm - use.requests - (1 if admitted else 0)), reset_s),
        tokens=None if tpm is None else RateWindow(
            tpm, max(0, tpm - use.tokens - (ask if admitted else 0)), reset_s),
    )


def settle(reserved: int, actual: int) -> int:
    """The token correction when a request ends: actual - reserved, added to the counters it
    was reserved in. E.g. 100 prompt + 500 max_tokens reserved, 120 generated: 220 - 600 =
    -380 given back. Positive when the prompt count was underestimated."""
    if reserved < 0 or actual < 0:
        raise ValueError("reserved and actual token counts must be >= 0")
    return actual - reserved
