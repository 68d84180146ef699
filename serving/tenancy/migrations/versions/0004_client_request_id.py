"""The ledger keeps the id a client gave its request beside the platform's own, which alone
keys the ledger (a client's id is neither unique across tenants nor trusted). NULL for rows
written before, and for requests that gave none.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (see 0002: a batch rebuild on SQLite would cascade-delete grants).
    op.add_column("usage_records",
                  sa.Column("client_request_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    op.drop_column("usage_records", "client_request_id")
