"""PostgreSQL for tests: every run works in schemas of its own (found through search_path),
dropped at the end, so concurrent runs never meet and nothing is left behind."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

# CI makes it reachable; the variable points the tests elsewhere.
POSTGRES_URL = os.environ.get("AIFACTORY_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RUN = uuid.uuid4().hex[:10]


class Postgres:
    def __init__(self, url: str = POSTGRES_URL, *, prefix: str = "test") -> None:
        self.url = url
        self.prefix = prefix
        self.engine = sa.create_engine(url)
        self.schemas: list[str] = []
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.OperationalError as exc:
            self.engine.dispose()
            pytest.fail(
                f"PostgreSQL is unreachable at {url} (set AIFACTORY_TEST_POSTGRES_URL, or start "
                "it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start): "
                f"{exc.orig}", pytrace=False)

    def new_schema(self) -> str:
        """A fresh empty schema; returns a database URL that works inside it."""
        schema = f"{self.prefix}_{RUN}_{len(self.schemas)}"
        with self.engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        self.schemas.append(schema)
        url = sa.engine.make_url(self.url)
        return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False)

    def drop_all(self) -> None:
        with self.engine.begin() as conn:
            for schema in self.schemas:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        self.engine.dispose()


def fresh_database(server_url: str = "postgresql://postgres@127.0.0.1:5432/test"):
    """A database of its own for one platform run (a generator for a fixture): yields its
    SQLAlchemy URL, drops it afterwards."""
    import psycopg

    name = f"aifactory_e2e_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is needed: {exc}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
