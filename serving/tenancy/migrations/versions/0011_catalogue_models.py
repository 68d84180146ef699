"""The model catalogue: trained checkpoints registered by name, with the facts read from
them at registration (serving/catalogue/model_store.py).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Spelt out, not imported from the models (see 0001). Datetimes are naive UTC.
    op.create_table(
        "catalogue_models",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("owner", sa.String(length=63), nullable=True),
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("digest", sa.String(length=71), nullable=False),
        sa.Column("architecture", sa.String(length=128), nullable=False),
        sa.Column("parameter_count", sa.BigInteger(), nullable=False),
        sa.Column("dtype", sa.String(length=32), nullable=True),
        sa.Column("context_length", sa.BigInteger(), nullable=True),
        sa.Column("has_tokenizer", sa.Boolean(), nullable=False),
        sa.Column("has_chat_template", sa.Boolean(), nullable=False),
        sa.Column("weights_bytes", sa.BigInteger(), nullable=False),
        sa.Column("shape", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_catalogue_models")),
    )
    op.create_index("ix_catalogue_models_owner", "catalogue_models", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_catalogue_models_owner", table_name="catalogue_models")
    op.drop_table("catalogue_models")
