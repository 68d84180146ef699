"""The ledger keeps the LoRA adapter a request ran with (its model id, as the tenant named it):
usage on a tenant's adapter is told apart from usage on its endpoint's own model. NULL for
requests on the endpoint's own model, and for rows written before.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-11
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (see 0002: a batch rebuild on SQLite would cascade-delete grants).
    op.add_column("usage_records", sa.Column("adapter", sa.String(length=63), nullable=True))


def downgrade() -> None:
    op.drop_column("usage_records", "adapter")
