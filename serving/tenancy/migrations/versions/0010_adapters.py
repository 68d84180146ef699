"""Tenants' LoRA adapters: each a model id of its own, owned by one tenant, applied on the
engine of one base endpoint.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Spelt out, not imported from the models (see 0001). Datetimes are naive UTC.
    op.create_table(
        "adapters",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("endpoint", sa.String(length=63), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=80), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("base_model", sa.Text(), nullable=True),
        sa.Column("target_modules", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_adapters")),
    )
    op.create_index("ix_adapters_tenant_name", "adapters", ["tenant", "name"])
    op.create_index("ix_adapters_endpoint", "adapters", ["endpoint"])


def downgrade() -> None:
    op.drop_index("ix_adapters_endpoint", table_name="adapters")
    op.drop_index("ix_adapters_tenant_name", table_name="adapters")
    op.drop_table("adapters")
