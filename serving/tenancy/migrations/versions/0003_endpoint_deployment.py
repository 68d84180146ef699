"""An endpoint created through the admin API keeps how it is deployed (JSON): model, replicas,
engine arguments. NULL for endpoints the platform config deploys.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (see 0002: a batch rebuild on SQLite would cascade-delete grants).
    op.add_column("endpoints", sa.Column("deployment", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("endpoints", "deployment")
