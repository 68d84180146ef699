"""The pure admission decision: each limit, windows rolling over, budgets, headers, settling."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.tenancy.admission import (
    AdmissionRequest,
    Limit,
    Limits,
    Usage,
    admit,
    effective,
    format_reset,
    month_of,
    settle,
    window_of,
)

T0 = 1_740_787_200.0  # 2025-03-01T00:00:00Z, the start of a minute window
NOW = T0 + 15.0  # 15 s into the window: it resets in 60 - 15 = 45 s
ASK = AdmissionRequest(prompt_tokens=100, max_tokens=500)  # reserves 600 tokens


def used(**counts: int) -> Usage:
    return Usage.at(NOW, **counts)


CASES = [
    # id, limits, usage, admitted, refused (in reported order), retry_after_s
    ("unlimited", Limits(), used(requests=10**6, tokens=10**9), True, (), None),
    # 9 + 1 = 10 <= 10
    ("rpm last one", Limits(requests_per_minute=10), used(requests=9), True, (), None),
    # 10 + 1 = 11 > 10; wait for the window to end: 45 s
    ("rpm full", Limits(requests_per_minute=10), used(requests=10),
     False, (Limit.REQUESTS,), 45.0),
    # 400 + 600 = 1000 <= 1000
    ("tpm exactly", Limits(tokens_per_minute=1000), used(tokens=400), True, (), None),
    # 401 + 600 = 1001 > 1000
    ("tpm over", Limits(tokens_per_minute=1000), used(tokens=401),
     False, (Limit.TOKENS,), 45.0),
    # 600 > 500 even with nothing used: waiting never helps
    ("too large", Limits(tokens_per_minute=500), used(), False, (Limit.REQUEST_TOO_LARGE,), None),
    # 3 + 1 = 4 <= 4
    ("concurrency last slot", Limits(concurrent_requests=4), used(in_flight=3), True, (), None),
    # 4 + 1 = 5 > 4; a slot frees whenever a request ends: no retry-after
    ("concurrency full", Limits(concurrent_requests=4), used(in_flight=4),
     False, (Limit.CONCURRENCY,), None),
    # 9400 + 600 = 10000 <= 10000
    ("budget exactly", Limits(tokens_per_month=10_000), used(month_tokens=9_400), True, (), None),
    # 9401 + 600 = 10001 > 10000: insufficient quota, not a rate limit
    ("budget spent", Limits(tokens_per_month=10_000), used(month_tokens=9_401),
     False, (Limit.INSUFFICIENT_QUOTA,), None),
    # both fail: all are reported; the wait is the rate limit's 45 s
    ("concurrency and rpm", Limits(requests_per_minute=5, concurrent_requests=1),
     used(requests=5, in_flight=1), False, (Limit.CONCURRENCY, Limit.REQUESTS), 45.0),
    # budget first, and no retry-after: waiting out the minute would not help
    ("budget and rpm", Limits(requests_per_minute=5, tokens_per_month=100),
     used(requests=5), False, (Limit.INSUFFICIENT_QUOTA, Limit.REQUESTS), None),
    # 0 + 600 > 500 is "too large", not "tokens": no second entry for the same limit
    ("too large is not tpm", Limits(tokens_per_minute=500), used(tokens=499),
     False, (Limit.REQUEST_TOO_LARGE,), None),
]


@pytest.mark.parametrize(("limits", "usage", "admitted", "refused", "retry_after"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_each_limit(limits: Limits, usage: Usage, admitted: bool, refused: tuple[Limit, ...],
                    retry_after: float | None) -> None:
    decision = admit(limits, usage, ASK, NOW)
    assert decision.admitted is admitted
    assert decision.refused == refused
    assert decision.retry_after_s == retry_after
    assert decision.reserved_tokens == (600 if admitted else 0)
    assert decision.insufficient_quota is (Limit.INSUFFICIENT_QUOTA in refused)
    assert decision.error_code == (None if admitted else "insufficient_quota"
                                   if Limit.INSUFFICIENT_QUOTA in refused
                                   else "rate_limit_exceeded")
    assert (decision.reason == "admitted") is admitted


def test_the_reason_names_the_numbers() -> None:
    decision = admit(Limits(tokens_per_minute=1000), used(tokens=401), ASK, NOW)
    assert decision.reason == "401 of 1000 tokens per minute used, the request reserves 600"


@pytest.mark.parametrize(("later", "admitted", "retry_after"), [
    (NOW + 44.9, False, pytest.approx(0.1)),  # still the same window: 45 - 44.9 = 0.1 s left
    (NOW + 45.0, True, None),  # T0 + 60: the next window, the old counts are stale
    (NOW + 3600.0, True, None),  # an hour on
])
def test_the_window_rolls_over(later: float, admitted: bool, retry_after: object) -> None:
    full = used(requests=10, tokens=1000)
    decision = admit(Limits(requests_per_minute=10, tokens_per_minute=1000), full, ASK, later)
    assert decision.admitted is admitted
    assert decision.retry_after_s == retry_after


def test_the_budget_rolls_over_with_the_calendar_month() -> None:
    last_second_of_feb = T0 - 1.0
    spent = Usage.at(last_second_of_feb, month_tokens=10_000)
    limits = Limits(tokens_per_month=10_000)
    assert admit(limits, spent, ASK, last_second_of_feb).insufficient_quota
    assert admit(limits, spent, ASK, T0).admitted  # March: February's tokens do not count
    assert month_of(last_second_of_feb) == 202502 and month_of(T0) == 202503


def test_in_flight_counts_do_not_roll_over() -> None:
    busy = used(in_flight=2)
    assert not admit(Limits(concurrent_requests=2), busy, ASK, NOW + 600).admitted


def test_headers_when_admitted() -> None:
    limits = Limits(requests_per_minute=60, tokens_per_minute=1000)
    decision = admit(limits, used(requests=10, tokens=100), AdmissionRequest(50, 100), NOW)
    assert decision.headers() == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "49",  # 60 - 10 - 1
        "x-ratelimit-reset-requests": "45s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "750",  # 1000 - 100 - (50 + 100)
        "x-ratelimit-reset-tokens": "45s",
    }


def test_headers_when_refused_carry_retry_after() -> None:
    limits = Limits(requests_per_minute=60, tokens_per_minute=1000)
    decision = admit(limits, used(requests=60, tokens=100), ASK, NOW + 14.98)
    assert decision.headers() == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "30.02s",  # 60 - 29.98
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "900",  # nothing reserved: 1000 - 100
        "x-ratelimit-reset-tokens": "30.02s",
        "retry-after": "31",  # whole seconds, rounded up
        "retry-after-ms": "30020",
    }


def test_headers_only_for_limits_that_are_set() -> None:
    assert admit(Limits(), used(), ASK, NOW).headers() == {}
    only_budget = admit(Limits(tokens_per_month=10), used(), ASK, NOW)
    assert only_budget.insufficient_quota and only_budget.headers() == {}
    headers = admit(Limits(tokens_per_minute=10_000), used(), ASK, NOW).headers()
    assert set(headers) == {"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
                            "x-ratelimit-reset-tokens"}


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"),
    (0.0004, "0s"),  # under half a millisecond
    (0.02, "20ms"),
    (0.999, "999ms"),
    (1, "1s"),
    (1.5, "1.5s"),
    (59.999, "59.999s"),
    (60, "1m0s"),
    (90.25, "1m30.25s"),
    (360, "6m0s"),
    (3661, "1h1m1s"),
    (7200, "2h0m0s"),
    (-3, "0s"),
])
def test_format_reset_like_openai(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


@pytest.mark.parametrize(("reserved", "actual", "delta"), [
    (600, 220, -380),  # 100 prompt + 500 max reserved, 120 generated: 220 - 600
    (600, 600, 0),  # used all of max_tokens
    (100, 120, 20),  # the prompt was counted short: charge the difference
    (0, 0, 0),
])
def test_settle(reserved: int, actual: int, delta: int) -> None:
    assert settle(reserved, actual) == delta


def test_settle_refuses_negative_counts() -> None:
    with pytest.raises(ValueError):
        settle(-1, 0)
    with pytest.raises(ValueError):
        settle(10, -1)
    with pytest.raises(ValueError):
        AdmissionRequest(prompt_tokens=-1, max_tokens=10)


@pytest.mark.parametrize(("tenant", "endpoint", "expected"), [
    # tenant 10 left (100 - 90) is less than the endpoint's 15 (20 - 5): the tenant binds
    ((Limits(requests_per_minute=100), used(requests=90)),
     (Limits(requests_per_minute=20), used(requests=5)), (100, 90)),
    # tenant 90 left, endpoint 15 left: the endpoint binds
    ((Limits(requests_per_minute=100), used(requests=10)),
     (Limits(requests_per_minute=20), used(requests=5)), (20, 5)),
    # only the endpoint sets a limit
    ((Limits(), used(requests=50)), (Limits(requests_per_minute=20), used(requests=5)), (20, 5)),
    # equal room (10 left each): the smaller limit is reported
    ((Limits(requests_per_minute=100), used(requests=90)),
     (Limits(requests_per_minute=20), used(requests=10)), (20, 10)),
])
def test_effective_takes_the_scope_with_least_left(tenant: tuple[Limits, Usage],
                                                   endpoint: tuple[Limits, Usage],
                                                   expected: tuple[int, int]) -> None:
    limits, usage = effective([tenant, endpoint], ASK, NOW)
    assert (limits.requests_per_minute, usage.requests) == expected


def test_effective_reports_too_large_over_a_busy_scope() -> None:
    # tenant: 1000 - 990 = 10 left; endpoint: 100 left but 600 > 100 can never fit
    tenant = (Limits(tokens_per_minute=1000), used(tokens=990))
    endpoint = (Limits(tokens_per_minute=100), used())
    decision = admit(*effective([tenant, endpoint], ASK, NOW), ASK, NOW)
    assert decision.refused == (Limit.REQUEST_TOO_LARGE,)


def test_effective_drops_stale_counts() -> None:
    later = NOW + 3600  # an hour into March
    old = Usage.at(later - 120, requests=99, month_tokens=5)
    limits = Limits(requests_per_minute=100, tokens_per_month=1000)
    _, usage = effective([(limits, old)], ASK, later)
    # an old window of the same month: the minute counts are stale, the month's are not
    assert usage == Usage(window_of(later), 0, 0, 0, month_of(later), 5)


_limit = st.one_of(st.none(), st.integers(1, 50))
_count = st.integers(0, 60)
_scope = st.tuples(
    st.builds(Limits, _limit, _limit, _limit, _limit),
    st.builds(lambda r, t, c, m: used(requests=r, tokens=t, in_flight=c, month_tokens=m),
              _count, _count, _count, _count),
)


@settings(database=None)  # keep no example database in the work tree
@given(scopes=st.lists(_scope, min_size=1, max_size=3), prompt=st.integers(0, 30),
       max_tokens=st.integers(0, 30))
def test_effective_admits_exactly_when_every_scope_would(
        scopes: list[tuple[Limits, Usage]], prompt: int, max_tokens: int) -> None:
    ask = AdmissionRequest(prompt, max_tokens)
    folded = admit(*effective(scopes, ask, NOW), ask, NOW)
    each = [admit(limits, usage, ask, NOW) for limits, usage in scopes]
    assert folded.admitted == all(d.admitted for d in each)
    assert set(folded.refused) <= {limit for d in each for limit in d.refused}
