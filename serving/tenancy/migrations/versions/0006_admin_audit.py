"""The audit log of admin actions: who (the calling key's tenant, prefix and scope, and its
address), what (action, target, the state before and after, as JSON), when. Append-only:
triggers refuse UPDATE and DELETE on both backends.

The triggers stop the application and mistakes, not the database's owner, who can drop them
(or TRUNCATE on PostgreSQL, which row triggers do not see): a log an operator cannot touch
belongs in a store outside the database.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelt out, not imported from the models (see 0001). Datetimes are naive UTC.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_REFUSAL = "admin_audit is append-only"


def upgrade() -> None:
    op.create_table(
        "admin_audit",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor_tenant", sa.String(length=63), nullable=False),
        sa.Column("actor_key_prefix", sa.String(length=16), nullable=False),
        sa.Column("actor_scope", sa.String(length=16), nullable=False),
        sa.Column("source_address", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=True),
        sa.Column("before", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("after", sa.JSON(none_as_null=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_audit")),
    )
    op.create_index("ix_admin_audit_tenant_id", "admin_audit", ["tenant", "id"])
    op.create_index("ix_admin_audit_at", "admin_audit", ["at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
            CREATE FUNCTION admin_audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION '{_REFUSAL}'; END $$""")
        op.execute("""
            CREATE TRIGGER admin_audit_append_only BEFORE UPDATE OR DELETE ON admin_audit
            FOR EACH ROW EXECUTE FUNCTION admin_audit_refuse_change()""")
        return
    for verb in ("UPDATE", "DELETE"):
        op.execute(f"""
            CREATE TRIGGER admin_audit_no_{verb.lower()} BEFORE {verb} ON admin_audit
            BEGIN SELECT RAISE(ABORT, '{_REFUSAL}'); END""")


def downgrade() -> None:
    op.drop_table("admin_audit")  # takes its triggers with it
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION admin_audit_refuse_change()")
