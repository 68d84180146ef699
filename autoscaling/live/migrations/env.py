"""Alembic's entry point for the autoscaler's tables, kept in the platform database beside the
tenancy tables under a version table of their own."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from autoscaling.live.persistence import VERSION_TABLE, metadata
from serving.tenancy.database import make_engine

_PG_LOCK_KEY = 0x7E4A5C8  # "autoscaler": not the tenancy history's lock


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata,
                      version_table=VERSION_TABLE,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        context.run_migrations()


engine = make_engine(context.config.attributes["database_url"])
try:
    with engine.connect() as conn:
        _run(conn)
finally:
    engine.dispose()
