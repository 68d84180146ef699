"""Tenant self-service and administration: tenants, keys, endpoints, quotas, usage, SLA
reports and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from aifactory_sdk.types._result import Result

# Tenants, keys, endpoints, quotas, usage


PriorityClass = Literal["critical", "standard", "best_effort"]
TenantStatus = Literal["active", "suspended"]
KeyScope = Literal["inference", "admin"]


class Slo(BaseModel):
    """A tenant's latency targets: p95 time to first token and inter-token latency in ms, and
    the share of requests that must meet both (e.g. 0.99)."""

    model_config = ConfigDict(extra="allow")
    ttft_p95_ms: int | None = None
    itl_p95_ms: int | None = None
    objective: float | None = None


class Tenant(Result):
    """`slo` holds the targets as set (None: the platform default), `slo_targets` those in
    force."""

    object: Literal["tenant"] = "tenant"
    name: str
    priority: PriorityClass
    status: TenantStatus
    created_at: datetime
    slo: Slo | None = None
    slo_targets: Slo | None = None


class TenantList(Result):
    object: Literal["list"] = "list"
    data: list[Tenant]


class ApiKey(Result):
    """A key as it may be shown again: its prefix, never the key."""

    object: Literal["api_key"] = "api_key"
    id: int
    tenant: str
    prefix: str
    scope: KeyScope
    status: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class CreatedApiKey(ApiKey):
    """The one result that carries the key itself: store it now, it cannot be shown again."""

    key: str


class ApiKeyList(Result):
    object: Literal["list"] = "list"
    data: list[ApiKey]


class Quota(Result):
    """A tenant's quota, or its quota on one endpoint; a None limit is unlimited."""

    object: Literal["quota"] = "quota"
    tenant: str
    endpoint: str | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None
    tokens_per_month: int | None = None


class Endpoint(Result):
    """An endpoint as an administrator sees it: owned by one tenant, or shared with `grants`."""

    object: Literal["endpoint"] = "endpoint"
    name: str
    owner: str | None = None
    shared: bool
    grants: list[str]
    created_at: datetime
    # How the platform deploys it, when it was created with a deployment (model, replicas,
    # engine arguments); None for endpoints of the platform config.
    deployment: dict[str, Any] | None = None


class EndpointList(Result):
    object: Literal["list"] = "list"
    data: list[Endpoint]


class MyEndpoint(Result):
    """An endpoint as its tenant sees it: its own or a shared one granted to it, with the
    tenant's quota on it."""

    object: Literal["endpoint"] = "endpoint"
    name: str
    shared: bool
    created_at: datetime
    quota: Quota


class MyEndpointList(Result):
    object: Literal["list"] = "list"
    data: list[MyEndpoint]


class Deleted(Result):
    """What a delete answers: which object is gone."""

    object: str
    deleted: bool


class UsageBucket(BaseModel):
    model_config = ConfigDict(extra="allow")
    start: datetime
    requests: int
    outcomes: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class UsageReport(Result):
    """A tenant's usage per UTC hour or day in [since, until), and the sums over the window."""

    object: Literal["usage"] = "usage"
    tenant: str
    since: datetime
    until: datetime
    by: Literal["hour", "day"]
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    buckets: list[UsageBucket]


class SlaLatency(BaseModel):
    """One latency over the window, in seconds; None where nothing was measured."""

    model_config = ConfigDict(extra="allow")
    samples: int
    p50_s: float | None = None
    p95_s: float | None = None
    p99_s: float | None = None
    target_p95_s: float | None = None
    met: bool | None = None


class SlaBucket(BaseModel):
    model_config = ConfigDict(extra="allow")
    start: datetime
    requests: int
    availability: float | None = None
    ttft_p95_s: float | None = None
    itl_p95_s: float | None = None
    compliance: float | None = None


class SlaBatch(BaseModel):
    """The window's batch lines, apart from the interactive figures (no latency target)."""

    model_config = ConfigDict(extra="allow")
    batches: int
    lines: int
    outcomes: dict[str, int]
    availability: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class SlaReport(Result):
    """A tenant's SLA over [since, until): availability, latency percentiles against its
    targets, the share of compliant requests against its objective. `definitions` says how
    each figure counts."""

    object: Literal["sla_report"] = "sla_report"
    tenant: str
    since: datetime
    until: datetime
    objective: float
    requests: int
    outcomes: dict[str, int]
    availability: float | None = None
    ttft: SlaLatency
    itl: SlaLatency
    compliance: float | None = None
    objective_met: bool | None = None
    total_tokens: int = 0
    buckets: list[SlaBucket] = []
    batch: SlaBatch | None = None  # None from a gateway older than the batch section
    definitions: dict[str, str] = {}


# The audit log


class AuditEntry(BaseModel):
    """One admin action: who (`actor_*`, `source_address`), what (`action` on `target`, about
    `tenant`, the changed fields `before` and `after`; None before a create and after a
    delete), when (`at`)."""

    model_config = ConfigDict(extra="allow")
    id: int
    at: datetime
    actor_tenant: str
    actor_key_prefix: str
    actor_scope: str
    source_address: str | None = None
    action: str
    target: str
    tenant: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class AuditList(Result):
    """A page of entries, oldest first; with `has_more`, pass `last_id` as the next
    `after_id`."""

    object: Literal["list"] = "list"
    data: list[AuditEntry]
    has_more: bool
    last_id: int | None = None
