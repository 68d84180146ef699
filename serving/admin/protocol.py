"""The admin API's request and response bodies, and how each response is made from a record."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from observability.slo import SloSettings
from serving.tenancy import (
    ApiKey,
    CreatedKey,
    Endpoint,
    KeyScope,
    PriorityClass,
    Quota,
    Tenant,
    TenantStatus,
    UsageBucket,
)
from serving.tenancy.audit import DEFAULT_LIMIT, MAX_LIMIT, AuditEntry, AuditPage, AuditQuery

QUOTA_FIELDS = ("requests_per_minute", "tokens_per_minute", "concurrent_requests",
                "tokens_per_month")


class StrictModel(BaseModel):
    """Requests name only fields they define; a misspelt one is refused, not ignored. Names
    and ranges are checked by the store, so its messages are the only ones."""

    model_config = ConfigDict(extra="forbid")


# Tenants


class SloUpdate(StrictModel):
    """Changes to `SloSettings`: a value given sets it, null restores the platform default,
    and a field left out keeps its current value."""

    ttft_p95_ms: StrictInt | None = None
    itl_p95_ms: StrictInt | None = None
    objective: StrictFloat | StrictInt | None = None

    def changes(self) -> dict[str, float | None]:
        return self.model_dump(exclude_unset=True)


class TenantCreate(StrictModel):
    name: StrictStr
    priority: PriorityClass = PriorityClass.STANDARD
    slo: SloUpdate | None = None


class TenantUpdate(StrictModel):
    """Only the fields given change."""

    priority: PriorityClass | None = None
    status: TenantStatus | None = None
    slo: SloUpdate | None = None


class TenantOut(BaseModel):
    """`slo` holds the targets as set (null: the default); `slo_targets` the ones in force."""

    object: Literal["tenant"] = "tenant"
    name: str
    priority: PriorityClass
    status: TenantStatus
    created_at: datetime
    slo: SloSettings
    slo_targets: SloSettings

    @classmethod
    def of(cls, tenant: Tenant) -> TenantOut:
        return cls(name=tenant.name, priority=tenant.priority, status=tenant.status,
                   created_at=tenant.created_at, slo=tenant.slo_settings,
                   slo_targets=SloSettings.of(tenant.slo))


class TenantList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TenantOut]


# API keys


class KeyCreate(StrictModel):
    scope: KeyScope = KeyScope.INFERENCE
    expires_at: AwareDatetime | None = None


class KeyOut(BaseModel):
    """A key as it may be shown again: never the key itself or its hash."""

    object: Literal["api_key"] = "api_key"
    id: int
    tenant: str
    prefix: str
    scope: KeyScope
    status: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey, now: datetime) -> KeyOut:
        status = ("revoked" if key.revoked_at is not None else
                  "active" if key.usable_at(now) else "expired")
        return cls(id=key.id, tenant=key.tenant, prefix=key.prefix, scope=key.scope,
                   status=status, created_at=key.created_at, expires_at=key.expires_at,
                   revoked_at=key.revoked_at)


class CreatedKeyOut(KeyOut):
    """The one response that carries the key: it is not stored and cannot be shown again."""

    key: str

    @classmethod
    def of_created(cls, created: CreatedKey, now: datetime) -> CreatedKeyOut:
        return cls(key=created.plaintext, **KeyOut.of(created.key, now).model_dump())


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyOut]


# Endpoints and grants


class EndpointCreate(StrictModel):
    """No owner makes a shared endpoint, reachable by the tenants granted it. With a
    `deployment` the platform deploys it at once: the fields of a config file's endpoint
    (`model`, `replicas`, `accelerators_per_replica`, `max_ongoing_requests`,
    `max_queued_requests`, `resources`, `engine`, `autoscaling`), checked by the platform
    that deploys it. With `autoscaling` the partition controller sizes it; the partition
    admits it by its `guaranteed_replicas`, not its `max_replicas`.
    Without one it is registered only (for an endpoint deployed by other means)."""

    name: StrictStr
    owner: StrictStr | None = None
    deployment: dict[str, Any] | None = None


class EndpointSloUpdate(StrictModel):
    """The p95 latency an autoscaled endpoint's replicas must keep; left out keeps it."""

    ttft_p95_ms: StrictInt | None = None
    itl_p95_ms: StrictInt | None = None


class EndpointAutoscalingUpdate(StrictModel):
    """A change to the autoscaling block of an endpoint created with one (the fields of a
    config file endpoint's `autoscaling`): a field given replaces its value, one left out
    keeps it; `idle_to_zero_s` null keeps one replica warm. The platform checks the result
    as it checks a new endpoint: bounds ordered, the guarantee within the partition."""

    min_replicas: StrictInt | None = None
    max_replicas: StrictInt | None = None
    guaranteed_replicas: StrictInt | None = None
    priority: StrictInt | None = None
    slo: EndpointSloUpdate | None = None
    target_ongoing_per_replica: StrictInt | StrictFloat | None = None
    idle_to_zero_s: StrictInt | StrictFloat | None = None

    def changes(self) -> dict[str, Any]:
        changed = {field: getattr(self, field) for field in self.model_fields_set}
        if self.slo is not None:
            changed["slo"] = {f: getattr(self.slo, f) for f in self.slo.model_fields_set}
        return changed


class EndpointOut(BaseModel):
    object: Literal["endpoint"] = "endpoint"
    name: str
    owner: str | None
    shared: bool
    grants: list[str]
    created_at: datetime
    deployment: dict[str, Any] | None = None

    @classmethod
    def of(cls, endpoint: Endpoint) -> EndpointOut:
        return cls(name=endpoint.name, owner=endpoint.owner, shared=endpoint.shared,
                   grants=list(endpoint.grants), created_at=endpoint.created_at,
                   deployment=endpoint.deployment)


class EndpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EndpointOut]


class EndpointDeleted(BaseModel):
    object: Literal["endpoint"] = "endpoint"
    name: str
    deleted: Literal[True] = True


# Quotas


class QuotaUpdate(StrictModel):
    """A limit given as a number sets it, given as null clears it (unlimited), and left out
    keeps its current value."""

    requests_per_minute: StrictInt | None = None
    tokens_per_minute: StrictInt | None = None
    concurrent_requests: StrictInt | None = None
    tokens_per_month: StrictInt | None = None

    def changes(self) -> dict[str, int | None]:
        return {field: getattr(self, field) for field in QUOTA_FIELDS
                if field in self.model_fields_set}


class QuotaOut(BaseModel):
    """A tenant's quota, or its quota on one endpoint; a null limit is unlimited."""

    object: Literal["quota"] = "quota"
    tenant: str
    endpoint: str | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    concurrent_requests: int | None
    tokens_per_month: int | None

    @classmethod
    def of(cls, quota: Quota) -> QuotaOut:
        return cls(tenant=quota.tenant, endpoint=quota.endpoint,
                   **{field: getattr(quota, field) for field in QUOTA_FIELDS})


class QuotaDeleted(BaseModel):
    object: Literal["quota"] = "quota"
    tenant: str
    endpoint: str | None
    deleted: Literal[True] = True


# Usage


class UsageQuery(StrictModel):
    """The window [since, until); until defaults to now and since to a day before until."""

    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    by: Literal["hour", "day"] = "hour"


class SlaQuery(StrictModel):
    """The SLA report's window [since, until); until defaults to now, since to a day before."""

    since: AwareDatetime | None = None
    until: AwareDatetime | None = None


class UsageCsvQuery(StrictModel):
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    tenant: StrictStr | None = None


class UsageBucketOut(BaseModel):
    start: datetime
    requests: int
    outcomes: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, bucket: UsageBucket) -> UsageBucketOut:
        return cls(start=bucket.start, requests=bucket.requests, outcomes=bucket.outcomes,
                   prompt_tokens=bucket.prompt_tokens,
                   completion_tokens=bucket.completion_tokens, total_tokens=bucket.total_tokens)


class UsageOut(BaseModel):
    """One tenant's usage per UTC hour or day with records, and the sums over the window."""

    object: Literal["usage"] = "usage"
    tenant: str
    since: datetime
    until: datetime
    by: Literal["hour", "day"]
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    buckets: list[UsageBucketOut]

    @classmethod
    def of(cls, tenant: str, since: datetime, until: datetime, by: Literal["hour", "day"],
           buckets: list[UsageBucket]) -> UsageOut:
        return cls(tenant=tenant, since=since, until=until, by=by,
                   requests=sum(b.requests for b in buckets),
                   prompt_tokens=sum(b.prompt_tokens for b in buckets),
                   completion_tokens=sum(b.completion_tokens for b in buckets),
                   total_tokens=sum(b.total_tokens for b in buckets),
                   buckets=[UsageBucketOut.of(b) for b in buckets])


# The audit log


class TenantAuditQuery(StrictModel):
    """A page of entries oldest first: those after `after_id` (the previous page's
    `last_id`), at or after `since` and before `until`."""

    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    after_id: int = Field(0, ge=0)
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)

    def query(self, tenant: str | None) -> AuditQuery:
        return AuditQuery(self.since, self.until, tenant, self.after_id, self.limit)


class AuditLogQuery(TenantAuditQuery):
    """As a tenant's, and `tenant` keeps the entries about that tenant only."""

    tenant: StrictStr | None = None


class AuditEntryOut(BaseModel):
    """Who did what, when, from where: `before` and `after` hold the target's changed fields
    (null before a create and after a delete). Never a key or its hash."""

    object: Literal["audit_entry"] = "audit_entry"
    id: int
    at: datetime
    actor_tenant: str
    actor_key_prefix: str
    actor_scope: str
    source_address: str | None
    action: str
    target: str
    tenant: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        return cls(**vars(entry))


class AuditList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AuditEntryOut]
    has_more: bool
    last_id: int | None  # the next page's after_id

    @classmethod
    def of(cls, page: AuditPage) -> AuditList:
        return cls(data=[AuditEntryOut.of(e) for e in page.entries], has_more=page.has_more,
                   last_id=page.entries[-1].id if page.entries else None)
