"""Tenancy tables: tenants, API keys, endpoints and grants, quotas, the usage ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Revisions spell their types out rather than import the models: a revision must keep
# meaning what it meant when it was written. Datetimes are naive UTC (see models.UTCDateTime).
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("priority IN ('critical', 'standard', 'best_effort')",
                           name=op.f("ck_tenants_priority")),
        sa.CheckConstraint("status IN ('active', 'suspended')", name=op.f("ck_tenants_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("name", name=op.f("uq_tenants_name")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("scope IN ('inference', 'admin')", name=op.f("ck_api_keys_scope")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"],
                                name=op.f("fk_api_keys_tenant_id_tenants"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_tenant_id"), "api_keys", ["tenant_id"])
    op.create_table(
        "endpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["tenants.id"],
                                name=op.f("fk_endpoints_owner_id_tenants"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_endpoints")),
        sa.UniqueConstraint("name", name=op.f("uq_endpoints_name")),
    )
    op.create_index(op.f("ix_endpoints_owner_id"), "endpoints", ["owner_id"])
    op.create_table(
        "endpoint_grants",
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["endpoint_id"], ["endpoints.id"],
                                name=op.f("fk_endpoint_grants_endpoint_id_endpoints"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"],
                                name=op.f("fk_endpoint_grants_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("endpoint_id", "tenant_id", name=op.f("pk_endpoint_grants")),
    )
    op.create_index(op.f("ix_endpoint_grants_tenant_id"), "endpoint_grants", ["tenant_id"])
    op.create_table(
        "quotas",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=True),
        sa.Column("requests_per_minute", sa.BigInteger(), nullable=True),
        sa.Column("tokens_per_minute", sa.BigInteger(), nullable=True),
        sa.Column("concurrent_requests", sa.BigInteger(), nullable=True),
        sa.Column("tokens_per_month", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("requests_per_minute IS NULL OR requests_per_minute > 0",
                           name=op.f("ck_quotas_requests_per_minute")),
        sa.CheckConstraint("tokens_per_minute IS NULL OR tokens_per_minute > 0",
                           name=op.f("ck_quotas_tokens_per_minute")),
        sa.CheckConstraint("concurrent_requests IS NULL OR concurrent_requests > 0",
                           name=op.f("ck_quotas_concurrent_requests")),
        sa.CheckConstraint("tokens_per_month IS NULL OR tokens_per_month > 0",
                           name=op.f("ck_quotas_tokens_per_month")),
        sa.ForeignKeyConstraint(["endpoint_id"], ["endpoints.id"],
                                name=op.f("fk_quotas_endpoint_id_endpoints"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"],
                                name=op.f("fk_quotas_tenant_id_tenants"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quotas")),
        sa.UniqueConstraint("tenant_id", "endpoint_id", name="uq_quotas_tenant_endpoint"),
    )
    op.create_index(op.f("ix_quotas_endpoint_id"), "quotas", ["endpoint_id"])
    # NULLs are distinct in the unique constraint above: the tenant-wide row gets its own index.
    op.create_index("uq_quotas_tenant_wide", "quotas", ["tenant_id"], unique=True,
                    sqlite_where=sa.text("endpoint_id IS NULL"),
                    postgresql_where=sa.text("endpoint_id IS NULL"))
    op.create_table(
        "usage_records",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("endpoint", sa.String(length=63), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("ttft_s", sa.Float(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("outcome IN ('ok', 'error', 'rejected', 'client_cancelled')",
                           name=op.f("ck_usage_records_outcome")),
        sa.CheckConstraint("prompt_tokens >= 0 AND completion_tokens >= 0",
                           name=op.f("ck_usage_records_tokens")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_records")),
        sa.UniqueConstraint("request_id", name=op.f("uq_usage_records_request_id")),
    )
    op.create_index("ix_usage_records_tenant_created", "usage_records", ["tenant", "created_at"])
    op.create_index("ix_usage_records_created_at", "usage_records", ["created_at"])


def downgrade() -> None:
    for table in ("usage_records", "quotas", "endpoint_grants", "endpoints", "api_keys",
                  "tenants"):
        op.drop_table(table)
