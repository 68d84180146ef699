"""Who may call what, and how much: authentication, endpoint access, admission and the
usage record of every request that reached admission."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from observability.slo import DEFAULT_SLO
from serving.catalogue.adapter_store import Adapter, adapters_of, tenant_adapter
from serving.gateway import telemetry
from serving.gateway.claim import Claims, claimed_tokens
from serving.gateway.ledger_writer import LedgerSpool, LedgerWriter
from serving.gateway.refusal_records import RefusalRecords
from serving.tenancy import (
    AdmissionCounters,
    AdmissionRequest,
    Decision,
    ErrorClass,
    Limits,
    MonthUnknown,
    Outcome,
    Principal,
    Reservation,
    Store,
    Unauthenticated,
    UsageRecord,
    scopes_for,
)
from serving.tenancy.admission import month_of
from serving.tenancy.records import batch_of

logger = logging.getLogger(__name__)

# Who a key is, what its tenant may call and its quotas are read from the store at most once
# a second per gateway replica: a revoked key, a new grant or a changed quota takes effect
# within this long, and the store is not read three times for every request.
STORE_CACHE_TTL_S = 1.0

# Attempts to reserve while month counters are seeded from the ledger (a second loss of the
# counters in between is the only reason for more than two).
SEED_ATTEMPTS = 3
# A release the counters did not take (Redis unreachable) is retried this often, backing off,
# before the reservation's lease is left to end it.
RELEASE_RETRY_FIRST_S = 0.5
RELEASE_RETRY_MAX_S = 30.0
RELEASE_RETRIES = 10

class _TtlCache:
    """A small time-bounded memo; entries older than `ttl_s` are read again. Requests that
    miss the same key while it is being read share that one read: otherwise, each time an
    entry expires, every request arriving before the read returns sends its own (under a
    flood of 150 requests a second they took half the gateway's core, in threads)."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: dict[Any, tuple[float, Any]] = {}
        self._reading: dict[Any, asyncio.Future] = {}

    async def get_or_read(self, key: Any, read: Callable[[], Awaitable[Any]]) -> Any:
        """The value for `key`: cached, else from the read in progress, else from `read()`.
        A failed read is not cached: its waiters get its exception, the next caller reads."""
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() - entry[0] <= self._ttl_s:
            return entry[1]
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(self._read(key, read))
            # Retrieved here too, so a failed read whose callers all left logs nothing.
            reading.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._reading[key] = reading
        # One caller cancelled (its client left) does not cancel the others' read.
        return await asyncio.shield(reading)

    async def _read(self, key: Any, read: Callable[[], Awaitable[Any]]) -> Any:
        try:
            value = await read()
        finally:
            del self._reading[key]
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), value)
        return value


# What a record's status and class are when the caller does not say: an error's class is
# unknown (a platform fault, for the SLA) unless its caller knows better.
IMPLIED: dict[Outcome, tuple[int | None, ErrorClass | None]] = {
    Outcome.OK: (200, None),
    Outcome.REJECTED: (429, ErrorClass.RATE_LIMITED),
    Outcome.CLIENT_CANCELLED: (None, ErrorClass.CANCELLED),
    Outcome.ERROR: (None, ErrorClass.UNKNOWN),
}

# Requests refused without engine work (their quota, a full endpoint): their ledger rows are
# sampled per tenant (refusal_records), so a flood of them cannot flood the store.
REFUSALS = (ErrorClass.RATE_LIMITED, ErrorClass.OVERLOADED)

# Refused before the tenant's limits were consulted: none refused it, none reserved.
NOT_ADMITTED = Decision(admitted=False, refused=(), reason="", retry_after_s=None,
                        reserved_tokens=0)


@dataclass
class Admitted:
    """One admitted request's bookkeeping, finished exactly once by `Access.finish`."""

    request_id: str
    principal: Principal
    endpoint: str
    decision: Decision
    reservation: Reservation | None
    prompt_tokens_estimate: int
    started: float
    created_at: datetime
    first_token_at: float | None = None
    finished: bool = False
    # For metrics and traces: the endpoint's model label, the last streamed content event and
    # how many there were (inter-token latency), and the request's span when tracing is on.
    model: str = "unknown"
    last_token_at: float | None = None
    content_events: int = 0
    # When the stream's relay last asked the engine for its next event: a client that reads
    # slowly delays it, and the engine's gap is measured from it (relay.content_seen).
    asked_at: float | None = None
    span: Any = None
    client_request_id: str | None = None
    # The tenant's LoRA adapter the request runs with (its name), for its ledger record; None
    # for the endpoint's own model.
    adapter: str | None = None


class NotGranted(LookupError):
    """The tenant may not call the endpoint (any more)."""


class Access:
    """The tenancy side of the gateway. The store is synchronous and runs in threads; the
    counters are shared by all gateway replicas (Redis) or local to one."""

    def __init__(self, store: Store, counters: AdmissionCounters,
                 clock: Callable[[], float] = time.time,
                 cache_ttl_s: float = STORE_CACHE_TTL_S,
                 request_metrics: telemetry.RequestMetrics | None = None,
                 ledger_spool: LedgerSpool | None = None) -> None:
        """`ledger_spool` keeps usage records while the store is unreachable (see
        ledger_writer); without one, such a record's request fails instead."""
        self.store = store
        self.counters = counters
        self.ledger = LedgerWriter(
            store.record_usage, spool=ledger_spool,
            on_dead_letter=lambda record: telemetry.dead_letter(record.tenant))
        self.metrics = request_metrics or telemetry.RequestMetrics()
        self._telemetry_failed = False
        self._clock = clock
        self._principals = _TtlCache(cache_ttl_s)
        self._grants = _TtlCache(cache_ttl_s)
        self._adapters = _TtlCache(cache_ttl_s)
        # Requests that find the same month counter missing share one read of the ledger;
        # when each counter was last seeded (monotonic), so a request whose reserve was
        # answered "missing" before a seed finished does not read the ledger again.
        self._seeding = _TtlCache(0.0)
        self._seeded_at: dict[tuple[str, int], float] = {}
        self._releasing: set[asyncio.Task] = set()
        self.refusal_records = RefusalRecords()

    async def authenticate(self, authorization: str | None) -> Principal:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("missing")
        def read() -> Principal | Unauthenticated:
            # A refusal is cached like a principal: a client retrying a wrong or revoked key
            # reads the store once a period, not once a request. Store errors are not.
            try:
                return self.store.authenticate(token)
            except Unauthenticated as refused:
                return refused

        known = await self._principals.get_or_read(token, lambda: asyncio.to_thread(read))
        if isinstance(known, Unauthenticated):
            raise Unauthenticated(str(known))
        return known

    async def visible_endpoints(self, principal: Principal) -> set[str]:
        endpoints = await asyncio.to_thread(self.store.list_endpoints, usable_by=principal.tenant)
        return {e.name for e in endpoints}

    async def adapter(self, principal: Principal, name: str) -> Adapter | None:
        """The tenant's own LoRA adapter of that name; another tenant's is None, as is a name
        never registered (a wrong name is cached too: a client retrying it costs one read a
        period)."""
        return await self._adapters.get_or_read(
            (principal.tenant, name),
            lambda: asyncio.to_thread(tenant_adapter, self.store, principal.tenant, name))

    async def adapters_of(self, principal: Principal) -> list[Adapter]:
        return await asyncio.to_thread(adapters_of, self.store, principal.tenant)

    async def may_use(self, principal: Principal, endpoint: str) -> bool:
        return (await self._grant(principal.tenant, endpoint)) is not None

    async def _grant(self, tenant: str, endpoint: str) -> tuple[Limits, Limits] | None:
        """The tenant's quotas for the endpoint, or None when it may not call it."""
        def read() -> tuple[Limits, Limits] | None:
            try:
                if not self.store.can_use(tenant, endpoint):
                    return None
            except LookupError:
                return None
            return self.store.limits_for(tenant, endpoint)

        return await self._grants.get_or_read((tenant, endpoint),
                                              lambda: asyncio.to_thread(read))

    async def _seed_months(self, scopes, now: float, asked_at: float) -> None:
        """Start each monthly budget's counter the counters do not have (Redis restarted
        empty, the month or this replica's own counters are new) at the ledger's sum; an
        existing counter is never overwritten. A counter seeded since `asked_at` (when the
        reserve that found it missing was sent) is there now: it is not read again."""
        month = month_of(now)
        year, number = divmod(month, 100)
        for scope in scopes:
            if self._seeded_at.get((scope.key, month), -math.inf) >= asked_at:
                continue
            async def seed(scope=scope) -> bool:
                # The reading's start time: what ended before it is in the sum (see release).
                began = self._clock()
                spent = await asyncio.to_thread(self.store.monthly_tokens, scope.tenant, year,
                                                number, endpoint=scope.endpoint)
                seeded = await self.counters.seed_month(scope, spent, began)
                # Noted inside the shared read, before any waiter resumes: a request whose
                # "missing" answer comes back in between must already see it.
                if len(self._seeded_at) >= 10_000:
                    self._seeded_at.clear()
                self._seeded_at[(scope.key, month)] = time.monotonic()
                return seeded

            await self._seeding.get_or_read((scope.key, month), seed)

    async def _reserve(self, scopes, claim: AdmissionRequest, now: float):
        for _ in range(SEED_ATTEMPTS):
            asked_at = time.monotonic()
            try:
                return await self.counters.reserve(scopes, claim, now)
            except MonthUnknown as unknown:
                await self._seed_months(unknown.scopes, now, asked_at)
        raise RuntimeError("monthly budget counters vanish as fast as they are seeded")

    async def admit(self, principal: Principal, endpoint: str, request_id: str,
                    body: dict[str, Any], context_len: int, model: str = "unknown",
                    span: Any = None, client_request_id: str | None = None,
                    claims: Claims = Claims.GENERATION,
                    adapter: str | None = None) -> Admitted:
        """`model` is the endpoint's model label for metrics; `span` the request's span;
        `client_request_id` the client's own id of the request, for its ledger record;
        `claims` what its kind claims from the token quotas; `adapter` the name of the LoRA
        adapter it runs with (None: the endpoint's own model), for its ledger record."""
        now = self._clock()
        prompt, max_tokens = claimed_tokens(claims, body, context_len)
        claim = AdmissionRequest(prompt, max_tokens)
        grant = await self._grant(principal.tenant, endpoint)
        if grant is None:  # revoked since routing: refused, never admitted without limits
            raise NotGranted(endpoint)
        tenant_limits, endpoint_limits = grant
        scopes = scopes_for(principal.tenant, endpoint, tenant_limits, endpoint_limits)
        decision, reservation = await self._reserve(scopes, claim, now)
        if decision.admitted:
            self.metrics.started(principal.tenant, endpoint, model,
                                 batch=batch_of(request_id) is not None)
        return Admitted(request_id, principal, endpoint, decision, reservation, prompt,
                        time.monotonic(), datetime.fromtimestamp(now, UTC), model=model,
                        span=span, client_request_id=client_request_id, adapter=adapter)

    def unadmitted(self, principal: Principal, endpoint: str, request_id: str,
                   model: str = "unknown", span: Any = None,
                   client_request_id: str | None = None,
                   adapter: str | None = None) -> Admitted:
        """The bookkeeping of a request the gateway refuses before admission (its endpoint is
        full): no quota is reserved, and `finish` records it without tokens."""
        return Admitted(request_id, principal, endpoint, NOT_ADMITTED, None, 0, time.monotonic(),
                        datetime.fromtimestamp(self._clock(), UTC), model=model, span=span,
                        client_request_id=client_request_id, adapter=adapter)

    async def finish(self, admitted: Admitted, outcome: Outcome, prompt_tokens: int | None = None,
                     completion_tokens: int = 0, *, http_status: int | None = None,
                     error_class: ErrorClass | None = None) -> None:
        """Settle the reservation with the real count and commit the usage record. The
        status and class default to what the outcome implies (an error's must be given)."""
        if admitted.finished:
            return
        admitted.finished = True
        prompt = admitted.prompt_tokens_estimate if prompt_tokens is None else prompt_tokens
        if admitted.reservation is not None:
            await self._release(admitted.reservation, prompt + completion_tokens)
        ended = time.monotonic()
        ttft = (admitted.first_token_at - admitted.started
                if admitted.first_token_at is not None else None)
        recorded_prompt = prompt if outcome is not Outcome.REJECTED else 0
        implied_status, implied_class = IMPLIED[outcome]
        http_status = implied_status if http_status is None else http_status
        error_class = implied_class if error_class is None else error_class
        self._observe(admitted, outcome, recorded_prompt, completion_tokens, ttft,
                      ended - admitted.started, error_class)
        if error_class in REFUSALS and not self.refusal_records.keep(
                admitted.principal.tenant, ended):
            return  # a refusal past its tenant's allowance: counted by the metrics only
        await self.ledger.write(UsageRecord(
            request_id=admitted.request_id,
            tenant=admitted.principal.tenant,
            key_prefix=admitted.principal.key_prefix,
            endpoint=admitted.endpoint,
            prompt_tokens=recorded_prompt,
            completion_tokens=completion_tokens,
            ttft_s=ttft,
            duration_s=ended - admitted.started,
            outcome=outcome,
            created_at=admitted.created_at,
            finished_at=datetime.now(UTC),
            client_request_id=admitted.client_request_id,
            http_status=http_status,
            error_class=error_class,
            adapter=admitted.adapter,
        ))

    async def withdraw(self, admitted: Admitted) -> None:
        """Undo an admission whose request the engines never served and whose sender sends
        it again under the same request id (a batch line): its slot and tokens freed, no
        usage record (the next attempt's is the request's only one)."""
        if admitted.finished:
            return
        admitted.finished = True
        if admitted.reservation is not None:
            await self._release(admitted.reservation, 0)
        if admitted.decision.admitted:
            self.metrics.withdrawn(admitted.principal.tenant, admitted.endpoint, admitted.model,
                                   batch=batch_of(admitted.request_id) is not None)

    async def _release(self, reservation: Reservation, spent: int) -> None:
        """Free the slot and settle the tokens. The counters failing here must cost neither
        the usage record (written next, whatever happens here) nor the slot for a lease's
        hour: the release is retried in the background."""
        try:
            await self.counters.release(reservation, spent)
        except Exception as exc:
            logger.warning("releasing reservation %s failed (%r); retrying in the background",
                           reservation.id, exc)
            retry = asyncio.get_running_loop().create_task(
                self._release_later(reservation, spent))
            self._releasing.add(retry)
            retry.add_done_callback(self._releasing.discard)

    async def _release_later(self, reservation: Reservation, spent: int) -> None:
        delay = RELEASE_RETRY_FIRST_S
        for _ in range(RELEASE_RETRIES):
            await asyncio.sleep(delay)
            try:
                await self.counters.release(reservation, spent)
                return
            except Exception:
                delay = min(delay * 2, RELEASE_RETRY_MAX_S)
        logger.error("reservation %s could not be released; its lease ends it",
                     reservation.id)

    def _observe(self, admitted: Admitted, outcome: Outcome, prompt_tokens: int,
                 completion_tokens: int, ttft: float | None, duration: float,
                 error_class: ErrorClass | None = None) -> None:
        """Metrics and span attributes of a finished request: the same figures as its usage
        record. Telemetry never fails a request."""
        try:
            principal = admitted.principal
            done = telemetry.Finished(
                tenant=principal.tenant, endpoint=admitted.endpoint, model=admitted.model,
                outcome=outcome, error_class=error_class, prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                duration_s=duration, ttft_s=ttft,
                itl_s=telemetry.inter_token_latency(
                    admitted.first_token_at, admitted.last_token_at, admitted.content_events),
                rejected_code=admitted.decision.error_code if outcome is Outcome.REJECTED else None,
                batch=batch_of(admitted.request_id) is not None)
            # Tenants' targets arrive on the principal; a store without them means defaults.
            self.metrics.finished(done, getattr(principal, "slo", DEFAULT_SLO),
                                  was_in_flight=admitted.decision.admitted)
            telemetry.record_usage(admitted.span, outcome, prompt_tokens, completion_tokens)
        except Exception:
            # Said once per process, not once per request.
            logger.log(logging.DEBUG if self._telemetry_failed else logging.WARNING,
                       "recording metrics of request %s failed", admitted.request_id,
                       exc_info=True)
            self._telemetry_failed = True
