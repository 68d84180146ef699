"""Admission counters, in-process and on the real Redis: the same rule as `admit`, atomically."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio

from serving.tenancy import AdmissionRequest, Limit, Limits, Scope, scopes_for
from serving.tenancy.admission import window_of
from serving.tenancy.counters import AdmissionCounters, LocalAdmissionCounters, MonthUnknown
from serving.tenancy.redis_counters import RedisAdmissionCounters

T0 = 1_740_787_200.0  # 2025-03-01T00:00:00Z, the start of a minute window
NOW = T0 + 15.0
ASK = AdmissionRequest(prompt_tokens=100, max_tokens=500)  # 600 tokens


def tenant(**limits: int) -> Scope:
    return Scope("acme", None, Limits(**limits))


MakeCounters = Callable[..., AdmissionCounters]
ClientFactory = Callable[[], redis.asyncio.Redis]


async def test_reserve_counts_until_the_limit(make_counters: MakeCounters) -> None:
    counters = make_counters()
    scope = [tenant(requests_per_minute=3)]
    results = [await counters.reserve(scope, ASK, NOW) for _ in range(4)]
    assert [decision.admitted for decision, _ in results] == [True, True, True, False]
    refused, reservation = results[-1]
    assert reservation is None and refused.refused == (Limit.REQUESTS,)
    assert refused.headers()["x-ratelimit-remaining-requests"] == "0"
    assert refused.retry_after_s == 45.0
    [usage] = await counters.read(scope, NOW)
    assert (usage.requests, usage.tokens, usage.in_flight, usage.month_tokens) == (3, 1800, 3,
                                                                                   1800)


async def test_a_new_window_starts_empty(make_counters: MakeCounters) -> None:
    counters = make_counters()
    scope = [tenant(requests_per_minute=1)]
    assert (await counters.reserve(scope, ASK, NOW))[0].admitted
    assert not (await counters.reserve(scope, ASK, NOW + 44.9))[0].admitted
    assert (await counters.reserve(scope, ASK, NOW + 45.0))[0].admitted  # T0 + 60


async def test_release_frees_the_slot_and_settles_tokens(make_counters: MakeCounters) -> None:
    counters = make_counters()
    scope = [tenant(concurrent_requests=1, tokens_per_minute=1000, tokens_per_month=5000)]
    assert await counters.seed_month(scope[0], 0, NOW)
    decision, held = await counters.reserve(scope, ASK, NOW)
    assert decision.admitted and held is not None
    assert not (await counters.reserve(scope, ASK, NOW))[0].admitted  # the one slot is taken
    assert await counters.release(held, actual_tokens=220)  # 600 reserved, 220 used: -380
    assert not await counters.release(held, actual_tokens=0)  # a second release changes nothing
    [usage] = await counters.read(scope, NOW)
    assert (usage.in_flight, usage.tokens, usage.month_tokens) == (0, 220, 220)
    # 220 + 600 = 820 <= 1000: room again
    assert (await counters.reserve(scope, ASK, NOW + 1))[0].admitted


async def test_both_scopes_count_and_either_refuses(make_counters: MakeCounters) -> None:
    counters = make_counters()
    llama = scopes_for("acme", "llama", Limits(requests_per_minute=3),
                       Limits(requests_per_minute=2))
    qwen = scopes_for("acme", "qwen", Limits(requests_per_minute=3), Limits())
    admitted = [(await counters.reserve(scopes, ASK, NOW))[0].admitted
                for scopes in (llama, llama, llama, qwen, qwen)]
    # llama: 2 per minute of its own; the tenant's 3 are shared, so qwen gets the third
    assert admitted == [True, True, False, True, False]
    tenant_usage, llama_usage = await counters.read(llama, NOW)
    assert (tenant_usage.requests, llama_usage.requests) == (3, 2)


async def test_the_month_budget_refuses_as_insufficient_quota(
        make_counters: MakeCounters) -> None:
    counters = make_counters()
    scope = [tenant(tokens_per_month=1000)]
    assert await counters.seed_month(scope[0], 500, NOW)  # from the ledger, say
    assert not await counters.seed_month(scope[0], 0, NOW)  # once only
    decision, _ = await counters.reserve(scope, ASK, NOW)  # 500 + 600 > 1000
    assert decision.insufficient_quota and decision.retry_after_s is None
    assert (await counters.reserve(scope, AdmissionRequest(100, 400), NOW))[0].admitted


async def test_a_missing_month_counter_is_never_read_as_zero(
        make_counters: MakeCounters) -> None:
    counters = make_counters()
    budgeted = Scope("acme", "llama", Limits(tokens_per_month=1000))
    scopes = [tenant(requests_per_minute=9), budgeted]
    with pytest.raises(MonthUnknown) as unknown:
        await counters.reserve(scopes, ASK, NOW)
    assert unknown.value.scopes == (budgeted,)
    [usage, _] = await counters.read(scopes, NOW)
    assert usage.requests == 0  # nothing was counted in any scope
    assert await counters.seed_month(budgeted, 700, NOW)  # the ledger's sum, say
    decision, _ = await counters.reserve(scopes, ASK, NOW)  # 700 + 600 > 1000
    assert decision.insufficient_quota


async def lost_and_seeded_again(before: AdmissionCounters, after: AdmissionCounters,
                                forget: Callable[[], Awaitable[None]]) -> int:
    """One reservation ends before the counters are lost (its 50 tokens reach the ledger),
    one after they were seeded again from that ledger (spending 120): the month's count."""
    scope = [tenant(tokens_per_month=10_000)]
    await before.seed_month(scope[0], 0, NOW)
    _, lost = await before.reserve(scope, ASK, NOW)
    _, settled = await before.reserve(scope, ASK, NOW)
    assert await before.release(settled, actual_tokens=50)
    await forget()
    assert await after.seed_month(scope[0], 50, NOW + 1)  # the ledger: the settled one's 50
    assert not await after.release(lost, actual_tokens=120)  # its lease went with the rest
    [usage] = await after.read(scope, NOW + 2)
    return usage.month_tokens


async def test_a_reservation_lost_with_local_counters_counts_when_it_ends() -> None:
    async def new_process() -> None:  # whose counters start empty by themselves
        pass

    counted = await lost_and_seeded_again(LocalAdmissionCounters(), LocalAdmissionCounters(),
                                          new_process)
    assert counted == 170


async def test_a_reservation_lost_with_redis_counts_when_it_ends(
        redis_client_factory: ClientFactory, counter_prefix: str) -> None:
    client = redis_client_factory()

    async def flush() -> None:  # Redis restarted empty, as far as this tenant can tell
        await client.delete(*[k async for k in client.scan_iter(match=f"{counter_prefix}:*")])

    counters = RedisAdmissionCounters(client, prefix=counter_prefix)
    assert await lost_and_seeded_again(counters, counters, flush) == 170


async def test_a_lease_ends_a_lost_reservation(make_counters: MakeCounters) -> None:
    counters = make_counters(lease_s=30.0)
    scope = [tenant(concurrent_requests=1)]
    assert (await counters.reserve(scope, ASK, NOW))[0].admitted  # its gateway dies
    assert not (await counters.reserve(scope, ASK, NOW + 29))[0].admitted
    assert (await counters.reserve(scope, ASK, NOW + 30))[0].admitted


# Scenarios run through the local counters (which call `admit`) and Redis (whose Lua script
# applies the rule itself): same decisions, or the Lua has drifted from `admit`.
SCENARIOS = {
    "rpm": ([Limits(requests_per_minute=4)], [(1, 1)] * 6),
    "tpm": ([Limits(tokens_per_minute=100)], [(30, 10), (30, 10), (1, 0), (50, 0), (0, 0)]),
    "too large": ([Limits(tokens_per_minute=100)], [(101, 0), (100, 0), (1, 0)]),
    "concurrency": ([Limits(concurrent_requests=2)], [(1, 1)] * 3),
    "budget": ([Limits(tokens_per_month=50)], [(20, 5), (20, 5), (1, 0), (0, 0)]),
    "two scopes": ([Limits(requests_per_minute=5, tokens_per_minute=90),
                    Limits(requests_per_minute=3, concurrent_requests=4)],
                   [(10, 20), (10, 20), (10, 20), (10, 20), (0, 0)]),
}


@pytest.mark.parametrize("name", SCENARIOS)
async def test_redis_decides_as_admit_does(name: str, redis_client_factory: ClientFactory,
                                           counter_prefix: str) -> None:
    limits, asks = SCENARIOS[name]
    local = LocalAdmissionCounters()
    shared = RedisAdmissionCounters(redis_client_factory(), prefix=f"{counter_prefix}:{name}")
    scopes = [Scope("acme", None if i == 0 else f"ep{i}", lim) for i, lim in enumerate(limits)]
    for scope in scopes:
        if scope.limits.tokens_per_month is not None:
            await local.seed_month(scope, 0, NOW)
            await shared.seed_month(scope, 0, NOW)
    for prompt, max_tokens in asks:
        ask = AdmissionRequest(prompt, max_tokens)
        expected, _ = await local.reserve(scopes, ask, NOW)
        got, _ = await shared.reserve(scopes, ask, NOW)
        assert got == expected


async def test_two_replicas_never_admit_past_the_limit(redis_client_factory: ClientFactory,
                                                       counter_prefix: str) -> None:
    """Two gateway replicas, each with its own Redis connections, race for one tenant's
    25 requests per minute (400 attempts), then for 1000 tokens per minute (200 attempts)."""
    replicas = [RedisAdmissionCounters(redis_client_factory(), prefix=counter_prefix)
                for _ in range(2)]
    requests = [tenant(requests_per_minute=25)]
    outcomes = await asyncio.gather(*(replicas[i % 2].reserve(requests, ASK, NOW + i / 1000)
                                      for i in range(400)))
    assert sum(decision.admitted for decision, _ in outcomes) == 25

    tokens = [Scope("acme", "llama", Limits(tokens_per_minute=1000))]
    small = AdmissionRequest(10, 20)  # 30 tokens: 1000 // 30 = 33 fit
    outcomes = await asyncio.gather(*(replicas[i % 2].reserve(tokens, small, NOW)
                                      for i in range(200)))
    assert sum(decision.admitted for decision, _ in outcomes) == 33
    [usage] = await replicas[0].read(tokens, NOW)
    assert usage.tokens == 33 * 30


async def test_two_replicas_share_the_concurrency_limit(redis_client_factory: ClientFactory,
                                                        counter_prefix: str) -> None:
    """Requests that hold their slot briefly and release it: at no moment more than 5 run."""
    replicas = [RedisAdmissionCounters(redis_client_factory(), prefix=counter_prefix)
                for _ in range(2)]
    scope = [tenant(concurrent_requests=5)]
    running = peak = admitted = 0

    async def one(i: int) -> None:
        nonlocal running, peak, admitted
        _, held = await replicas[i % 2].reserve(scope, ASK, NOW)
        if held is None:
            return
        running += 1
        admitted += 1
        peak = max(peak, running)
        await asyncio.sleep(0.005)
        running -= 1
        await replicas[(i + 1) % 2].release(held, actual_tokens=0)  # either may release

    await asyncio.gather(*(one(i) for i in range(300)))
    assert admitted >= 5 and peak <= 5
    [usage] = await replicas[0].read(scope, NOW)
    assert usage.in_flight == 0


async def test_every_key_expires(redis_client_factory: ClientFactory,
                                 counter_prefix: str) -> None:
    client = redis_client_factory()
    counters = RedisAdmissionCounters(client, prefix=counter_prefix, lease_s=120)
    scopes = scopes_for("acme", "llama", Limits(requests_per_minute=9), Limits())
    await counters.reserve(scopes, ASK, NOW)
    await counters.seed_month(Scope("beta", None, Limits()), 10, NOW)
    keys = [key async for key in client.scan_iter(match=f"{counter_prefix}:*")]
    assert len(keys) == 3 * 2 + 2  # beta's month counter and when it was seeded
    ttls = {key.decode(): await client.ttl(key) for key in keys}
    assert all(ttl > 0 for ttl in ttls.values()), ttls
    window_key = counters.keys(scopes[0], window_of(NOW), 202503)[0]
    assert 0 < ttls[window_key] <= 120
    # and all of one tenant's keys hash to one cluster slot
    assert all("{acme}" in key for key in ttls if "beta" not in key)
