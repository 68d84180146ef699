"""Admission counters in Redis, shared by all gateway replicas: check-and-count in one Lua call.

Why Lua and not WATCH/MULTI around `admit`: admission is on every request's path, and the
contended case is the normal one (one busy tenant, many replicas). A script is one round trip
and never retries; optimistic WATCH transactions abort and retry exactly when a tenant is
busy. The script applies `admit`'s rule (every set limit holds with the request counted) to the
values it reads, and returns those values; Python then runs the real `admit` on them for the
Decision (which limit, retry-after, headers), so the explanation comes from one place and a
disagreement between the two is caught as a bug.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from redis.asyncio import Redis

from serving.tenancy import validation as check
from serving.tenancy.admission import (
    WINDOW_S,
    AdmissionRequest,
    Decision,
    Limits,
    Usage,
    admit,
    effective,
    month_end,
    month_of,
    settle,
    window_of,
)
from serving.tenancy.counters import DEFAULT_LEASE_S, MonthUnknown, Reservation, Scope

# KEYS, three per scope: the minute window (hash: r = requests, t = tokens), the in-flight
# leases (sorted set: reservation id scored by its deadline), the month's tokens (string).
# ARGV: now, reservation id, lease deadline, tokens asked, window TTL, month TTL, lease TTL,
# then per scope its rpm, tpm, concurrency, month budget (-1 = unlimited).
# Returns {1 or 0, then per scope r, t, c, m}, or {-1, then the 0-based indexes of budgeted
# scopes whose month counter does not exist}: those are seeded first, never read as zero.
_RESERVE = """
-- Numbers go back to Redis as the strings they came in: Lua would print them with 14 digits.
local now, id, deadline, ask = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local asked = tonumber(ask)
local window_ttl, month_ttl, lease_ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local unknown = {-1}
for i = 0, #KEYS / 3 - 1 do
  if tonumber(ARGV[11 + 4 * i]) >= 0 and redis.call('EXISTS', KEYS[3 * i + 3]) == 0 then
    table.insert(unknown, i)
  end
end
if #unknown > 1 then return unknown end
local out = {1}
for i = 0, #KEYS / 3 - 1 do
  local win, leases, month = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  local r = tonumber(redis.call('HGET', win, 'r') or '0')
  local t = tonumber(redis.call('HGET', win, 't') or '0')
  local c = redis.call('ZCARD', leases)
  local m = tonumber(redis.call('GET', month) or '0')
  local rpm, tpm = tonumber(ARGV[8 + 4 * i]), tonumber(ARGV[9 + 4 * i])
  local conc, budget = tonumber(ARGV[10 + 4 * i]), tonumber(ARGV[11 + 4 * i])
  -- admission.admit's rule: every set limit holds with this request counted.
  if (rpm >= 0 and r + 1 > rpm) or (tpm >= 0 and t + asked > tpm)
      or (conc >= 0 and c + 1 > conc) or (budget >= 0 and m + asked > budget) then
    out[1] = 0
  end
  table.insert(out, r); table.insert(out, t); table.insert(out, c); table.insert(out, m)
end
if out[1] == 1 then
  for i = 0, #KEYS / 3 - 1 do
    local win, leases, month = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
    redis.call('HINCRBY', win, 'r', 1)
    redis.call('HINCRBY', win, 't', ask)
    redis.call('EXPIRE', win, window_ttl)
    redis.call('ZADD', leases, deadline, id)
    redis.call('EXPIRE', leases, lease_ttl)
    redis.call('INCRBY', month, ask)
    redis.call('EXPIRE', month, month_ttl)
  end
end
return out
"""

# KEYS, four per scope: those of _RESERVE and the month's seeding time; ARGV: reservation id,
# token correction, tokens really spent, when the reservation was made. The lease is the
# guard: only the release that removes it settles, so a retried release cannot refund twice.
# A lease that is gone while a month counter was seeded after the reservation was made was
# lost with the counters: the ledger that seeded them did not have this request, so what it
# spent is added. Counters whose keys expired are left alone, and none goes below zero.
_RELEASE = """
local id, delta, spent, made_at = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('ZREM', KEYS[2], id) == 0 then
  for i = 0, #KEYS / 4 - 1 do
    local month, seeded = KEYS[4 * i + 3], KEYS[4 * i + 4]
    if tonumber(redis.call('GET', seeded) or '-1') > made_at
        and redis.call('EXISTS', month) == 1 then
      redis.call('INCRBY', month, spent)
    end
  end
  return 0
end
local settling = tonumber(delta) ~= 0
for i = 0, #KEYS / 4 - 1 do
  local win, leases, month = KEYS[4 * i + 1], KEYS[4 * i + 2], KEYS[4 * i + 3]
  redis.call('ZREM', leases, id)
  if settling and redis.call('EXISTS', win) == 1 then
    if redis.call('HINCRBY', win, 't', delta) < 0 then redis.call('HSET', win, 't', 0) end
  end
  if settling and redis.call('EXISTS', month) == 1 then
    if redis.call('INCRBY', month, delta) < 0 then redis.call('SET', month, 0, 'KEEPTTL') end
  end
end
return 1
"""

# The month's counter and when it was seeded, together, once: the first seeder wins.
_SEED = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[3]) then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""

# A window's counts outlive it by one window, for requests that settle after it ended.
_WINDOW_TTL_S = 2 * WINDOW_S
# Month counters outlive their month by a day, for the same reason.
_MONTH_GRACE_S = 86_400


def _month_ttl(now: float) -> int:
    """Seconds the month's counter has left. Relative TTLs, not EXPIREAT: with the gateway's
    `now` they hold whatever Redis's own clock says."""
    return int(month_end(now) - now) + _MONTH_GRACE_S


class AdmissionRuleMismatch(RuntimeError):
    """The Lua script and `admit` disagreed on the same counts: a bug, never a refusal."""


class RedisAdmissionCounters:
    """`AdmissionCounters` on Redis. Every key of one tenant carries the `{tenant}` hash tag,
    so the script's keys share a slot on Redis Cluster too."""

    def __init__(self, client: Redis, *, prefix: str = "aifactory:admission",
                 lease_s: float = DEFAULT_LEASE_S) -> None:
        self._client = client
        self._prefix = prefix
        self._lease_s = lease_s
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)
        self._seed = client.register_script(_SEED)

    def keys(self, scope: Scope, window: int, month: int) -> tuple[str, str, str]:
        """The window, lease and month keys of a scope, e.g. "p:{acme}:e:llama:w:29000000"."""
        base = f"{self._prefix}:{{{scope.tenant}}}:" + (
            "t" if scope.endpoint is None else f"e:{scope.endpoint}")
        return f"{base}:w:{window}", f"{base}:inflight", f"{base}:m:{month}"

    def seeded_key(self, scope: Scope, month: int) -> str:
        return self.keys(scope, 0, month)[2] + ":seeded"

    async def reserve(self, scopes: Sequence[Scope], request: AdmissionRequest,
                      now: float) -> tuple[Decision, Reservation | None]:
        window, month = window_of(now), month_of(now)
        rid = uuid.uuid4().hex
        keys = [key for scope in scopes for key in self.keys(scope, window, month)]
        args: list[str | int] = [
            repr(now), rid, repr(now + self._lease_s), request.tokens, _WINDOW_TTL_S,
            _month_ttl(now), int(self._lease_s) + 1,
        ]
        for scope in scopes:
            args.extend(_unlimited_as_minus_one(scope.limits))
        ok, *seen = await self._reserve(keys=keys, args=args)
        if ok == -1:
            raise MonthUnknown([scopes[i] for i in seen])
        usages = [Usage(window, *seen[i:i + 3], month, seen[i + 3])
                  for i in range(0, len(seen), 4)]
        limits, usage = effective(zip((s.limits for s in scopes), usages, strict=True),
                                  request, now)
        decision = admit(limits, usage, request, now)
        reservation = (Reservation(rid, tuple(scopes), window, month, request.tokens, now)
                       if ok else None)
        if decision.admitted != bool(ok):
            if reservation is not None:
                await self.release(reservation, request.tokens)
            raise AdmissionRuleMismatch(
                f"Lua said {'admit' if ok else 'refuse'}, admit() said {decision.reason!r} "
                f"for {usages} against {[s.limits for s in scopes]}")
        return decision, reservation

    async def release(self, reservation: Reservation, actual_tokens: int) -> bool:
        delta = settle(reservation.tokens, actual_tokens)
        keys = [key for scope in reservation.scopes
                for key in (*self.keys(scope, reservation.window, reservation.month),
                            self.seeded_key(scope, reservation.month))]
        if not keys:
            return False
        return bool(await self._release(keys=keys, args=[
            reservation.id, delta, check.count("tokens", actual_tokens),
            repr(reservation.made_at)]))

    async def read(self, scopes: Sequence[Scope], now: float) -> list[Usage]:
        window, month = window_of(now), month_of(now)
        async with self._client.pipeline(transaction=True) as pipe:
            for scope in scopes:
                win, leases, month_key = self.keys(scope, window, month)
                pipe.hmget(win, "r", "t")
                # Expired leases are not counted; `reserve` removes them.
                pipe.zcount(leases, f"({now!r}", "+inf")
                pipe.get(month_key)
            replies = await pipe.execute()
        usages = []
        for i in range(0, len(replies), 3):
            (requests, tokens), in_flight, month_tokens = replies[i:i + 3]
            usages.append(Usage(window, int(requests or 0), int(tokens or 0), int(in_flight),
                                month, int(month_tokens or 0)))
        return usages

    async def seed_month(self, scope: Scope, tokens: int, now: float) -> bool:
        month = month_of(now)
        _, _, month_key = self.keys(scope, window_of(now), month)
        return bool(await self._seed(keys=[month_key, self.seeded_key(scope, month)], args=[
            check.count("tokens", tokens), repr(now), _month_ttl(now)]))


def _unlimited_as_minus_one(limits: Limits) -> list[int]:
    return [-1 if value is None else value for value in (
        limits.requests_per_minute, limits.tokens_per_minute, limits.concurrent_requests,
        limits.tokens_per_month)]
