"""Batch lines indexed for what every batch worker tick asks: the first claimable lines in
order (batch_id, state, line), and the batch's progress by state and answer status
(batch_id, state, status_code), each read from its index alone. The (batch_id, state) index
they replace left both to read the ended lines' rows, a tick ever slower as a batch
progressed (about 4 ms at 5,000 lines half done on SQLite, against 2 at 1,500).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_batch_lines_batch_id_state_line", "batch_lines",
                    ["batch_id", "state", "line"])
    op.create_index("ix_batch_lines_batch_id_state_status_code", "batch_lines",
                    ["batch_id", "state", "status_code"])
    op.drop_index("ix_batch_lines_batch_id_state", table_name="batch_lines")


def downgrade() -> None:
    op.create_index("ix_batch_lines_batch_id_state", "batch_lines", ["batch_id", "state"])
    op.drop_index("ix_batch_lines_batch_id_state_status_code", table_name="batch_lines")
    op.drop_index("ix_batch_lines_batch_id_state_line", table_name="batch_lines")
