"""Typed results: inference (OpenAI's shapes), tenant self-service and administration, and the
rate-limit state and request id every result carries."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr

# Rate limits, from OpenAI's x-ratelimit-* response headers


class LimitState(BaseModel):
    """One limit as the platform last reported it: e.g. 600 requests per minute, 598 left,
    the window resets in 1.5 s."""

    limit: int
    remaining: int
    reset_seconds: float | None = None


class RateLimit(BaseModel):
    """The limits set for the caller (None: unlimited, or not reported on this response)."""

    requests: LimitState | None = None
    tokens: LimitState | None = None


class Result(BaseModel):
    """Any result: its fields, plus `request_id` and `rate_limit` from the response headers.
    Fields the platform adds later are kept, not refused."""

    model_config = ConfigDict(extra="allow")
    _request_id: str | None = PrivateAttr(default=None)
    _rate_limit: RateLimit = PrivateAttr(default_factory=RateLimit)

    @property
    def request_id(self) -> str | None:
        return self._request_id

    @property
    def rate_limit(self) -> RateLimit:
        return self._rate_limit


# Inference


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | None = None


class ChatChoice(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    message: ChatMessage
    finish_reason: str | None = None


class ChatCompletion(Result):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class ChatDelta(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    delta: ChatDelta
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One streamed event; the last one (no choices) carries the usage."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    text: str
    finish_reason: str | None = None


class Completion(Result):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class CompletionChunk(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    max_model_len: int | None = None


class ModelList(Result):
    object: Literal["list"] = "list"
    data: list[Model]


class ModelCard(Model, Result):
    """One model, as `models.retrieve` answers."""


class Embedding(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str  # a base64 string when asked with encoding_format="base64"


class EmbeddingList(Result):
    object: Literal["list"] = "list"
    model: str | None = None
    data: list[Embedding]
    usage: Usage


# The Responses API


class ResponseUsage(BaseModel):
    model_config = ConfigDict(extra="allow")
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class ResponseObject(Result):
    """A model response (OpenAI's `Response`): `output` holds its items (messages, tool
    calls, reasoning) as the platform sends them; `output_text` joins the message text."""

    id: str
    object: Literal["response"] = "response"
    created_at: float
    model: str
    status: str | None = None
    output: list[dict[str, Any]]
    previous_response_id: str | None = None
    usage: ResponseUsage | None = None

    @property
    def output_text(self) -> str:
        return "".join(part.get("text", "") for item in self.output
                       if item.get("type") == "message"
                       for part in item.get("content") or []
                       if part.get("type") == "output_text")


class ResponseStreamEvent(BaseModel):
    """One event of a streamed response, by `type`: e.g. `response.output_text.delta`
    carries `delta`; the closing one (`response.completed`, `.incomplete` or `.failed`)
    carries the whole `response` with its usage."""

    CLOSING_TYPES: ClassVar[frozenset[str]] = frozenset(
        {"response.completed", "response.incomplete", "response.failed"})
    model_config = ConfigDict(extra="allow")
    type: str
    sequence_number: int | None = None
    delta: str | None = None
    response: ResponseObject | None = None

    @property
    def closes(self) -> bool:
        return self.type in self.CLOSING_TYPES

    @property
    def usage(self) -> Usage | None:
        """The closing event's token counts, in chat's terms."""
        counted = None if self.response is None else self.response.usage
        if counted is None:
            return None
        return Usage(prompt_tokens=counted.input_tokens,
                     completion_tokens=counted.output_tokens,
                     total_tokens=counted.total_tokens)


class DeletedResponse(Result):
    id: str
    object: Literal["response"] = "response"
    deleted: bool


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


def stamped(result: Any, request_id: str | None, rate_limit: RateLimit) -> Any:
    """The result with the response's request id and rate-limit state attached."""
    if isinstance(result, Result):
        result._request_id = request_id
        result._rate_limit = rate_limit
    return result
