"""Per-tenant SLO targets: p95 TTFT and ITL in milliseconds and the objective; NULL is default.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = {"slo_ttft_p95_ms": sa.Integer, "slo_itl_p95_ms": sa.Integer,
            "slo_objective": sa.Float}


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: on SQLite a batch rebuild drops and recreates
    # `tenants`, and with foreign keys on that would cascade-delete every key and quota.
    # Ranges are therefore checked in code, not by constraints.
    for name, kind in _COLUMNS.items():
        op.add_column("tenants", sa.Column(name, kind(), nullable=True))


def downgrade() -> None:
    # DROP COLUMN of a plain column needs no rebuild on SQLite 3.35+.
    for name in _COLUMNS:
        op.drop_column("tenants", name)
