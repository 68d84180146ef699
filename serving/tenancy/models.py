"""The tenancy tables as SQLAlchemy models; the migrations create exactly these."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from serving.tenancy.records import KeyScope, Outcome, PriorityClass, TenantStatus

# Named constraints, so a later migration can drop or alter them by name on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite has no BIGINT rowid: only "INTEGER PRIMARY KEY" autoincrements there.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, stored naive in UTC on every backend.

    SQLite keeps no zone, and PostgreSQL's timestamptz would bucket hours and days by the
    session's time zone; naive UTC makes both behave the same.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _one_of(column: str, kind: type) -> CheckConstraint:
    values = ", ".join(f"'{member.value}'" for member in kind)
    return CheckConstraint(f"{column} IN ({values})", name=column)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class TenantRow(Base):
    """A tenant. NULL SLO targets mean the platform defaults; their ranges are checked in
    code (validation.slo_*), as SQLite adds a check constraint only by rebuilding the table."""

    __tablename__ = "tenants"
    __table_args__ = (_one_of("priority", PriorityClass), _one_of("status", TenantStatus))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    priority: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    slo_ttft_p95_ms: Mapped[int | None] = mapped_column(Integer)
    slo_itl_p95_ms: Mapped[int | None] = mapped_column(Integer)
    slo_objective: Mapped[float | None] = mapped_column(Float)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    __table_args__ = (_one_of("scope", KeyScope),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EndpointRow(Base):
    """An endpoint with `owner_id` NULL is shared: tenants reach it through grants."""

    __tablename__ = "endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                                 index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # How an endpoint created through the admin API is deployed (JSON); NULL: by the config.
    deployment: Mapped[str | None] = mapped_column(Text)


class GrantRow(Base):
    __tablename__ = "endpoint_grants"

    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class QuotaRow(Base):
    """A tenant's quota (`endpoint_id` NULL) or its quota on one endpoint; NULL limits are
    unlimited."""

    __tablename__ = "quotas"
    __table_args__ = (
        UniqueConstraint("tenant_id", "endpoint_id", name="uq_quotas_tenant_endpoint"),
        # NULLs are distinct in a unique constraint, so the tenant-wide row needs its own index.
        Index("uq_quotas_tenant_wide", "tenant_id", unique=True,
              sqlite_where=text("endpoint_id IS NULL"),
              postgresql_where=text("endpoint_id IS NULL")),
        CheckConstraint("requests_per_minute IS NULL OR requests_per_minute > 0",
                        name="requests_per_minute"),
        CheckConstraint("tokens_per_minute IS NULL OR tokens_per_minute > 0",
                        name="tokens_per_minute"),
        CheckConstraint("concurrent_requests IS NULL OR concurrent_requests > 0",
                        name="concurrent_requests"),
        CheckConstraint("tokens_per_month IS NULL OR tokens_per_month > 0",
                        name="tokens_per_month"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), index=True)
    requests_per_minute: Mapped[int | None] = mapped_column(BigInteger)
    tokens_per_minute: Mapped[int | None] = mapped_column(BigInteger)
    concurrent_requests: Mapped[int | None] = mapped_column(BigInteger)
    tokens_per_month: Mapped[int | None] = mapped_column(BigInteger)


class UsageRow(Base):
    """The ledger. Tenant and endpoint are kept by name, not by foreign key: the ledger is
    history, and must outlive the rows it names."""

    __tablename__ = "usage_records"
    __table_args__ = (
        _one_of("outcome", Outcome),
        CheckConstraint("prompt_tokens >= 0 AND completion_tokens >= 0", name="tokens"),
        Index("ix_usage_records_tenant_created", "tenant", "created_at"),
        Index("ix_usage_records_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), unique=True)
    tenant: Mapped[str] = mapped_column(String(63))
    key_prefix: Mapped[str] = mapped_column(String(16))
    endpoint: Mapped[str] = mapped_column(String(63))
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    ttft_s: Mapped[float | None] = mapped_column(Float)
    duration_s: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    client_request_id: Mapped[str | None] = mapped_column(String(128))
    http_status: Mapped[int | None] = mapped_column(SmallInteger)
    error_class: Mapped[str | None] = mapped_column(String(16))
    adapter: Mapped[str | None] = mapped_column(String(63))  # None: the endpoint's own model


class AuditRow(Base):
    """The audit log of admin actions (serving/tenancy/audit.py writes and reads it). Rows are
    only ever appended: migration 0006 adds triggers that refuse UPDATE and DELETE. Tenants
    and targets are kept by name, not by foreign key: like the ledger, it is history."""

    __tablename__ = "admin_audit"
    __table_args__ = (
        Index("ix_admin_audit_tenant_id", "tenant", "id"),
        Index("ix_admin_audit_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_tenant: Mapped[str] = mapped_column(String(63))
    actor_key_prefix: Mapped[str] = mapped_column(String(16))
    actor_scope: Mapped[str] = mapped_column(String(16))
    source_address: Mapped[str | None] = mapped_column(String(64))  # IPv6 needs up to 45
    action: Mapped[str] = mapped_column(String(32))  # e.g. "quota.set"
    target: Mapped[str] = mapped_column(String(255))  # e.g. "tenant/acme/quota"
    tenant: Mapped[str | None] = mapped_column(String(63))  # the tenant the change is about
    # None as SQL NULL, not JSON null: "no state" (before a create, after a delete).
    before: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))
    after: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))


class StoredResponseRow(Base):
    """A Responses API response stored for its tenant (`store: true`): the response as it
    was answered and the whole conversation that led to it, so `previous_response_id` can
    continue it from any gateway replica. Kept until `expires_at` (the retention)."""

    __tablename__ = "stored_responses"
    __table_args__ = (
        Index("ix_stored_responses_expires_at", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # vLLM's resp_... id
    tenant: Mapped[str] = mapped_column(String(63))
    endpoint: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The input items the engine was given (the conversation before this response).
    input: Mapped[list] = mapped_column(JSON)
    response: Mapped[dict] = mapped_column(JSON)


class BatchRow(Base):
    """A batch job (OpenAI's Batch API) of one tenant: its status and the moment it entered
    each, its input and output files, the line counts. Its lines are BatchLineRow."""

    __tablename__ = "batches"
    __table_args__ = (
        Index("ix_batches_tenant_created_at", "tenant", "created_at"),
        Index("ix_batches_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # batch_...
    tenant: Mapped[str] = mapped_column(String(63))
    key_prefix: Mapped[str] = mapped_column(String(16))  # the key that made it, for the ledger
    endpoint: Mapped[str] = mapped_column(String(64))  # e.g. /v1/chat/completions
    input_file_id: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When it entered each later status (OpenAI's *_at fields); None before.
    moments: Mapped[dict] = mapped_column(JSON)
    output_file_id: Mapped[str | None] = mapped_column(String(64))
    error_file_id: Mapped[str | None] = mapped_column(String(64))
    errors: Mapped[list | None] = mapped_column(JSON(none_as_null=True))
    batch_metadata: Mapped[dict | None] = mapped_column("metadata", JSON(none_as_null=True))
    total: Mapped[int] = mapped_column(Integer)


class BatchLineRow(Base):
    """One request of a batch: queued, running (sent by the gateway replica named in
    `lease_owner` until `lease_until`; a lease that runs out puts it back in the queue) or
    ended, with the answer as a client would have got it."""

    __tablename__ = "batch_lines"
    __table_args__ = (
        # What each batch worker tick asks, read from an index alone (migration 0013).
        Index("ix_batch_lines_batch_id_state_line", "batch_id", "state", "line"),
        Index("ix_batch_lines_batch_id_state_status_code", "batch_id", "state", "status_code"),
    )

    batch_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1-based, as in the file
    custom_id: Mapped[str] = mapped_column(String(512))
    body: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(8))  # queued, running, ended
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(SmallInteger)
    answer: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))
    request_id: Mapped[str | None] = mapped_column(String(128))


class FileRow(Base):
    """A tenant's file (OpenAI's Files API): what is known of it. Its bytes are in the
    storage folder under its id (serving.batch.files.storage), never under the name the
    client gave, which is kept here for display only. Ids grow with time (see
    serving.batch.files.rules), so a tenant's files list in order of their ids."""

    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_tenant_id", "tenant", "id"),
        Index("ix_files_expires_at", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # file-...
    tenant: Mapped[str] = mapped_column(String(63))
    purpose: Mapped[str] = mapped_column(String(32))  # batch, batch_output
    filename: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None: until deleted


class FileQuotaRow(Base):
    """A tenant's own limits on its files; a NULL limit is the platform's default."""

    __tablename__ = "file_quotas"

    tenant: Mapped[str] = mapped_column(String(63), primary_key=True)
    max_file_bytes: Mapped[int | None] = mapped_column(BigInteger)
    max_files: Mapped[int | None] = mapped_column(Integer)
    max_total_bytes: Mapped[int | None] = mapped_column(BigInteger)


class AdapterRow(Base):
    """A tenant's LoRA adapter (serving/catalogue/adapter_store.py): `name` is the model id its
    tenant sends, unique platform-wide and never an endpoint's name; requests naming it run on
    `endpoint`'s engine with the folder at `path` applied. Tenant and endpoint are kept by
    name, as batches keep theirs; an endpoint with adapters is not deleted (Store)."""

    __tablename__ = "adapters"
    __table_args__ = (
        Index("ix_adapters_tenant_name", "tenant", "name"),
        Index("ix_adapters_endpoint", "endpoint"),
    )

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    endpoint: Mapped[str] = mapped_column(String(63))
    path: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(80))  # sha256:..., the folder's content
    rank: Mapped[int] = mapped_column(Integer)
    base_model: Mapped[str | None] = mapped_column(Text)  # as adapter_config.json names it
    target_modules: Mapped[list | str] = mapped_column(JSON)  # names, or peft's regex
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CatalogueModelRow(Base):
    """A model in the catalogue (serving/catalogue/model_store.py): a checked checkpoint
    folder and the facts read from it. The owner is kept by name, as batches and files
    keep theirs; NULL: platform-wide."""

    __tablename__ = "catalogue_models"
    __table_args__ = (Index("ix_catalogue_models_owner", "owner"),)

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(63))
    source: Mapped[str] = mapped_column(String(1024))  # an absolute folder path
    version: Mapped[str | None] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(71))  # sha256:<64 hex>
    architecture: Mapped[str] = mapped_column(String(128))
    parameter_count: Mapped[int] = mapped_column(BigInteger)
    dtype: Mapped[str | None] = mapped_column(String(32))
    context_length: Mapped[int | None] = mapped_column(BigInteger)
    has_tokenizer: Mapped[bool] = mapped_column(Boolean)
    has_chat_template: Mapped[bool] = mapped_column(Boolean)
    weights_bytes: Mapped[int] = mapped_column(BigInteger)
    # The sizes sizing.py needs (layers, heads, head_dim, ...): serving.catalogue.facts'
    # ModelShape as a JSON object.
    shape: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
