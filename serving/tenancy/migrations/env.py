"""Alembic's entry point for the tenancy tables: migrates the connection or URL it is handed."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from serving.tenancy.database import make_engine
from serving.tenancy.migrate import VERSION_TABLE
from serving.tenancy.models import Base

# Any constant works as long as nothing else in the database takes the same advisory lock.
_PG_LOCK_KEY = 0x7E4A4C7  # "tenancy"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        # SQLite alters tables only by copying them; batch mode does that for later revisions.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Gateway replicas starting together would race to create the same tables; the
            # lock makes the others wait, then find the head revision already applied.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        context.run_migrations()


def _main() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.attributes["database_url"])
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


_main()
