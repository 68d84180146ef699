"""Where the tenancy database is and how to connect to it: URL resolution and the engine."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

DATABASE_URL_ENV = "AIFACTORY_DATABASE_URL"


def default_database_url(home: Path) -> str:
    """The SQLite file under the aifactory home, e.g. sqlite:////var/lib/aifactory/aifactory.db."""
    return f"sqlite:///{Path(home).expanduser().resolve()}/aifactory.db"


def database_url_from_env(home: Path, environ: Mapping[str, str] | None = None) -> str:
    """The one place that reads AIFACTORY_DATABASE_URL: it wins over the default when set."""
    env = os.environ if environ is None else environ
    return env.get(DATABASE_URL_ENV, "").strip() or default_database_url(home)


def make_engine(database_url: str) -> Engine:
    """An engine for the URL. SQLite gets its parent folder made, foreign keys enforced (off by
    default there, and the cascades rely on them), WAL so readers never wait for the writer,
    and a busy timeout so concurrent writers queue instead of failing. Errors never carry the
    statement's parameters (key hashes, client ids) into logs."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, hide_parameters=True)
    if url.database and url.database != ":memory:":
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL still survives a killed process (a gateway replica dying), only
        # not a power cut; it spares an fsync per commit on the ledger's path.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine
