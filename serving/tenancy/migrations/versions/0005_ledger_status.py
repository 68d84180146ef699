"""The ledger keeps the HTTP status a client got and, for anything but ok, why (error_class):
the SLA's availability counts only the platform's own faults, not a tenant's bad requests or
the documented overload refusals. Rows from before get the class their outcome implies;
their errors, whose cause was not kept, become `unknown` (counted as faults, as they were).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (see 0002: a batch rebuild on SQLite would cascade-delete grants).
    op.add_column("usage_records", sa.Column("http_status", sa.SmallInteger(), nullable=True))
    op.add_column("usage_records",
                  sa.Column("error_class", sa.String(length=16), nullable=True))
    for outcome, error_class, status in (("ok", None, 200), ("rejected", "rate_limited", 429),
                                         ("client_cancelled", "cancelled", None),
                                         ("error", "unknown", None)):
        op.execute(sa.text(
            "UPDATE usage_records SET error_class = :error_class, http_status = :status "
            "WHERE outcome = :outcome AND error_class IS NULL").bindparams(
                error_class=error_class, status=status, outcome=outcome))


def downgrade() -> None:
    op.drop_column("usage_records", "error_class")
    op.drop_column("usage_records", "http_status")
