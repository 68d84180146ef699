"""The tenancy vocabulary: its enums and the plain records the store hands out."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from observability.slo import DEFAULT_SLO, SloSettings, SloTargets
from serving.tenancy.admission import Limits


class PriorityClass(StrEnum):
    """How a tenant's traffic ranks when capacity is short."""

    CRITICAL = "critical"
    STANDARD = "standard"
    BEST_EFFORT = "best_effort"


class TenantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class KeyScope(StrEnum):
    """What a key may call: the OpenAI routes, or the admin API as well."""

    INFERENCE = "inference"
    ADMIN = "admin"


class Outcome(StrEnum):
    """How a request that reached admission ended."""

    OK = "ok"
    ERROR = "error"
    REJECTED = "rejected"
    CLIENT_CANCELLED = "client_cancelled"


class ErrorClass(StrEnum):
    """Why a request did not end well, for the SLA: only platform faults count against it."""

    CLIENT_ERROR = "client_error"  # the request itself was wrong (the engine's 4xx)
    RATE_LIMITED = "rate_limited"  # the tenant's own quota
    OVERLOADED = "overloaded"  # the documented 503 with Retry-After of a full endpoint
    CANCELLED = "cancelled"  # the client went away
    PLATFORM_ERROR = "platform_error"  # no engine could be reached
    ENGINE_ERROR = "engine_error"  # the engine failed (its 5xx, a stream broken mid-way)
    UNKNOWN = "unknown"  # rows from before the ledger kept the class

    @property
    def is_platform_fault(self) -> bool:
        return self in (ErrorClass.PLATFORM_ERROR, ErrorClass.ENGINE_ERROR, ErrorClass.UNKNOWN)


@dataclass(frozen=True)
class Tenant:
    name: str
    priority: PriorityClass
    status: TenantStatus
    created_at: datetime
    slo_settings: SloSettings = field(default_factory=SloSettings)

    @property
    def slo(self) -> SloTargets:
        return self.slo_settings.targets


@dataclass(frozen=True)
class ApiKey:
    """A key as it may be shown again: its prefix, never the key or its hash."""

    id: int
    tenant: str
    prefix: str
    scope: KeyScope
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def usable_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class CreatedKey:
    """The one moment the plaintext exists outside the client: returned by `create_key`."""

    plaintext: str
    key: ApiKey


@dataclass(frozen=True)
class Principal:
    """Who an authenticated request acts for."""

    tenant: str
    priority: PriorityClass
    key_prefix: str
    scope: KeyScope
    # The tenant's targets, so the gateway can judge each request without another look-up.
    slo: SloTargets = DEFAULT_SLO


@dataclass(frozen=True)
class Endpoint:
    """An endpoint (the `model` clients name): owned by one tenant, or shared (owner None)
    with the tenants in `grants`."""

    name: str
    owner: str | None
    grants: tuple[str, ...]
    created_at: datetime
    # How the platform deploys it when it was created through the admin API (model, replicas,
    # engine arguments); None for endpoints the platform config deploys.
    deployment: dict[str, Any] | None = None

    @property
    def shared(self) -> bool:
        return self.owner is None


@dataclass(frozen=True)
class Quota:
    """A tenant's quota, or its quota on one endpoint when `endpoint` is set."""

    tenant: str
    endpoint: str | None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None
    tokens_per_month: int | None = None

    @property
    def limits(self) -> Limits:
        return Limits(self.requests_per_minute, self.tokens_per_minute,
                      self.concurrent_requests, self.tokens_per_month)


# A batch line's ledger key: its batch's id and its line number. The platform makes every
# request id (a request's own is 32 hex digits), so no request's can take this shape.
_BATCH_LINE_ID = re.compile(r"^(batch_[0-9a-f]{32})-([0-9]+)$")


def batch_line_request_id(batch_id: str, line: int) -> str:
    """The ledger's key of a batch line: the same for every attempt at it, so a line run
    again after a crash is never recorded twice (the ledger skips a request id it has)."""
    return f"{batch_id}-{line}"


def batch_of(request_id: str) -> str | None:
    """The batch a ledger record's request belongs to; None for an interactive request."""
    matched = _BATCH_LINE_ID.fullmatch(request_id)
    return None if matched is None else matched.group(1)


@dataclass(frozen=True)
class UsageRecord:
    """One request that reached admission, as the ledger keeps it."""

    request_id: str
    tenant: str
    key_prefix: str
    endpoint: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None
    duration_s: float | None
    outcome: Outcome
    created_at: datetime
    finished_at: datetime | None
    # The id the client gave its request (x-client-request-id), kept beside the platform's
    # own `request_id`, which alone keys the ledger.
    client_request_id: str | None = None
    # The HTTP status the client got (200 for a stream that broke after it started) and, for
    # anything but ok, why (ErrorClass).
    http_status: int | None = None
    error_class: ErrorClass | None = None
    # The tenant's LoRA adapter the request ran with (its model id); None for the endpoint's
    # own model.
    adapter: str | None = None

    @property
    def batch_id(self) -> str | None:
        """The batch this record is a line of (the ledger keys a line `{batch_id}-{line}`)."""
        return batch_of(self.request_id)

    @property
    def is_platform_fault(self) -> bool:
        """An error the platform owes the tenant; rows from before the class was kept count
        as such."""
        if self.outcome is not Outcome.ERROR:
            return False
        return self.error_class is None or ErrorClass(self.error_class).is_platform_fault

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class UsageBucket:
    """One tenant's requests in one hour or day: counts per outcome and token sums."""

    start: datetime
    requests: int
    outcomes: dict[str, int]
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
