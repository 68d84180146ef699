"""Admission counters: the interface gateway replicas share, and an in-process version of it.

A monthly budget's counter that does not exist is never read as zero: Redis restarted empty,
or the month or the replica is new. `reserve` then raises MonthUnknown for the scopes whose
counters must first be seeded from the ledger (`seed_month`, once, the first seeder wins).
Reservations made before the counters were lost are not in the ledger yet; when they end,
`release` finds their lease gone and a counter seeded after they were made, and adds what
they really spent, so the seeded counter ends up as if nothing had been lost."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from serving.tenancy import validation as check
from serving.tenancy.admission import (
    WINDOW_S,
    AdmissionRequest,
    Decision,
    Limits,
    Usage,
    admit,
    effective,
    month_of,
    settle,
    window_of,
)

# How long a reservation holds a concurrency slot if its gateway dies before releasing it.
# Longer than any request may run: a request outliving its lease frees its slot early and is
# not settled (its month counter keeps the full reservation; the ledger stays exact).
DEFAULT_LEASE_S = 3600.0


@dataclass(frozen=True)
class Scope:
    """One set of counters and the quota checked against them: a tenant's own, or a tenant's
    on one endpoint."""

    tenant: str
    endpoint: str | None
    limits: Limits

    def __post_init__(self) -> None:
        check.name("tenant", self.tenant)
        if self.endpoint is not None:
            check.name("endpoint", self.endpoint)

    @property
    def key(self) -> str:
        return self.tenant if self.endpoint is None else f"{self.tenant}/{self.endpoint}"


def scopes_for(tenant: str, endpoint: str, tenant_limits: Limits,
               endpoint_limits: Limits) -> tuple[Scope, Scope]:
    """The two scopes a request to `endpoint` counts in, e.g. from `Store.limits_for`."""
    return Scope(tenant, None, tenant_limits), Scope(tenant, endpoint, endpoint_limits)


@dataclass(frozen=True)
class Reservation:
    """What an admitted request holds until it ends: a concurrency slot in each scope and its
    token reservation in the minute window and month it was admitted in."""

    id: str
    scopes: tuple[Scope, ...]
    window: int
    month: int
    tokens: int
    made_at: float = 0.0


class MonthUnknown(Exception):
    """Budgeted scopes whose month counter does not exist: seed them, then reserve again."""

    def __init__(self, scopes: Sequence[Scope]) -> None:
        super().__init__(f"month counters to seed: {[s.key for s in scopes]}")
        self.scopes = tuple(scopes)


class AdmissionCounters(Protocol):
    """Counters shared by every gateway replica. `reserve` checks and counts in one atomic
    step, so two replicas can never both take the last unit of a limit."""

    async def reserve(self, scopes: Sequence[Scope], request: AdmissionRequest,
                      now: float) -> tuple[Decision, Reservation | None]:
        """Admit and count the request in every scope, or count nothing and say why not.
        Raises MonthUnknown when a budgeted scope's month counter must be seeded first."""
        ...

    async def release(self, reservation: Reservation, actual_tokens: int) -> bool:
        """Free the concurrency slot and settle the tokens (see `admission.settle`). Only the
        first release of a reservation counts; returns whether this one did. A reservation
        whose lease was lost with the counters adds `actual_tokens` to month counters seeded
        after it was made (the ledger they were seeded from did not have it)."""
        ...

    async def read(self, scopes: Sequence[Scope], now: float) -> list[Usage]:
        """The counters as they are, one Usage per scope, without reserving anything."""
        ...

    async def seed_month(self, scope: Scope, tokens: int, now: float) -> bool:
        """Start the month's token counter at `tokens` (the ledger's sum when its reading
        began at `now`) unless it exists. Returns whether it was set."""
        ...


class LocalAdmissionCounters:
    """Counters in this process: enough for a single gateway replica, and the reference the
    shared counters are tested against. It calls `admit` itself."""

    def __init__(self, *, lease_s: float = DEFAULT_LEASE_S) -> None:
        self._lease_s = lease_s
        self._windows: dict[tuple[str, int], list[int]] = {}  # (scope, window) -> [reqs, tokens]
        self._months: dict[tuple[str, int], int] = {}
        self._leases: dict[str, dict[str, float]] = {}  # scope -> reservation id -> deadline
        self._seeded_at: dict[tuple[str, int], float] = {}
        self._pruned_at = 0

    async def reserve(self, scopes: Sequence[Scope], request: AdmissionRequest,
                      now: float) -> tuple[Decision, Reservation | None]:
        # No await from the read to the writes: on one event loop that is one atomic step.
        month = month_of(now)
        unknown = [s for s in scopes if s.limits.tokens_per_month is not None
                   and (s.key, month) not in self._months]
        if unknown:
            raise MonthUnknown(unknown)
        usages = self._read(scopes, now)
        limits, usage = effective(zip((s.limits for s in scopes), usages, strict=True),
                                  request, now)
        decision = admit(limits, usage, request, now)
        if not decision.admitted:
            return decision, None
        window = window_of(now)
        self._forget_before(window)
        reservation = Reservation(uuid.uuid4().hex, tuple(scopes), window, month, request.tokens,
                                  now)
        for scope in scopes:
            counts = self._windows.setdefault((scope.key, window), [0, 0])
            counts[0] += 1
            counts[1] += request.tokens
            self._months[scope.key, month] = self._months.get((scope.key, month), 0) + \
                request.tokens
            self._leases.setdefault(scope.key, {})[reservation.id] = now + self._lease_s
        return decision, reservation

    async def release(self, reservation: Reservation, actual_tokens: int) -> bool:
        delta = settle(reservation.tokens, actual_tokens)
        first = reservation.scopes[0].key if reservation.scopes else ""
        if self._leases.get(first, {}).get(reservation.id) is None:
            for scope in reservation.scopes:  # lost with the counters, or released before
                month_key = (scope.key, reservation.month)
                if (self._seeded_at.get(month_key, -1.0) > reservation.made_at
                        and month_key in self._months):
                    self._months[month_key] += check.count("tokens", actual_tokens)
            return False
        for scope in reservation.scopes:
            self._leases.get(scope.key, {}).pop(reservation.id, None)
            counts = self._windows.get((scope.key, reservation.window))
            if counts is not None:
                counts[1] = max(0, counts[1] + delta)
            month_key = (scope.key, reservation.month)
            if month_key in self._months:
                self._months[month_key] = max(0, self._months[month_key] + delta)
        return True

    async def read(self, scopes: Sequence[Scope], now: float) -> list[Usage]:
        return self._read(scopes, now)

    async def seed_month(self, scope: Scope, tokens: int, now: float) -> bool:
        key = (scope.key, month_of(now))
        if key in self._months:
            return False
        self._months[key] = check.count("tokens", tokens)
        self._seeded_at[key] = now
        return True

    def _read(self, scopes: Sequence[Scope], now: float) -> list[Usage]:
        window, month = window_of(now), month_of(now)
        usages = []
        for scope in scopes:
            leases = self._leases.get(scope.key, {})
            for rid in [rid for rid, deadline in leases.items() if deadline <= now]:
                del leases[rid]
            requests, tokens = self._windows.get((scope.key, window), (0, 0))
            usages.append(Usage(window, requests, tokens, len(leases), month,
                                self._months.get((scope.key, month), 0)))
        return usages

    def _forget_before(self, window: int) -> None:
        """Drop the counts of windows and months gone by, once per new window."""
        if window == self._pruned_at:
            return
        self._pruned_at = window
        # The window before stays: a request admitted in it may still settle there. Months
        # stay back to the previous one for the same reason.
        for key in [key for key in self._windows if key[1] < window - 1]:
            del self._windows[key]
        year, month = divmod(month_of(window * WINDOW_S), 100)
        oldest_month = (year - 1) * 100 + 12 if month == 1 else year * 100 + month - 1
        for key in [key for key in self._months if key[1] < oldest_month]:
            del self._months[key]
            self._seeded_at.pop(key, None)
