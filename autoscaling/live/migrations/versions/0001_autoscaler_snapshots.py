"""The autoscaler's latest decision and policy state per partition, and its scaling actions.

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


def upgrade() -> None:
    op.create_table(
        "autoscaler_snapshots",
        sa.Column("partition", sa.String(length=63), primary_key=True),
        sa.Column("decided_at", sa.Float(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("decisions", sa.Text(), nullable=False),
        sa.Column("controller_started_at", sa.Float(), nullable=False),
        sa.Column("resumed", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "autoscaler_actions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("partition", sa.String(length=63), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("endpoint", sa.String(length=63), nullable=False),
        sa.Column("previous", sa.Integer(), nullable=False),
        sa.Column("target", sa.Integer(), nullable=False),
        sa.Column("current", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("explanation", sa.Text(), nullable=False),
    )
    op.create_index("ix_autoscaler_actions_partition_at", "autoscaler_actions",
                    ["partition", "at"])


def downgrade() -> None:
    op.drop_index("ix_autoscaler_actions_partition_at", "autoscaler_actions")
    op.drop_table("autoscaler_actions")
    op.drop_table("autoscaler_snapshots")
