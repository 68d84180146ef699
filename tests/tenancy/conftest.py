"""Fixtures for the tenancy tests: migrated stores on SQLite and PostgreSQL, a clock, Redis."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import redis.asyncio
import sqlalchemy as sa

from serving.tenancy import Store, upgrade
from serving.tenancy.counters import LocalAdmissionCounters
from serving.tenancy.models import Base
from serving.tenancy.redis_counters import RedisAdmissionCounters
from tests.manual_clock import Clock
from tests.postgres_schemas import POSTGRES_URL, RUN, Postgres

# CI makes both reachable; the variables point the tests elsewhere.
REDIS_URL = os.environ.get("AIFACTORY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC))


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    pg = Postgres(POSTGRES_URL, prefix="tenancy")
    yield pg
    pg.drop_all()


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with nothing in it, on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/empty.db"
    return request.getfixturevalue("postgres").new_schema()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file per run; each test gets a copy (faster than migrating)."""
    path = tmp_path_factory.mktemp("tenancy") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def migrated_postgres(postgres: Postgres) -> str:
    url = postgres.new_schema()
    upgrade(url)
    return url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty tenancy database on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "aifactory.db"
        shutil.copy(request.getfixturevalue("migrated_sqlite"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("migrated_postgres")
    engine = sa.create_engine(url)
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def store(database_url: str, clock: Clock) -> Iterator[Store]:
    store = Store(database_url, clock=clock)
    yield store
    store.close()


# Redis: keys under a prefix of this run's own, deleted at the end.


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    prefix = f"aifactory-test:{RUN}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is unreachable at {REDIS_URL} (set AIFACTORY_TEST_REDIS_URL, or "
                    f"start redis-server): {exc}", pytrace=False)
    yield prefix
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
async def redis_client_factory(
        redis_prefix: str) -> AsyncIterator[Callable[[], redis.asyncio.Redis]]:
    """Independent clients (each its own connection pool), as separate gateway replicas have.
    The pools block when full, as a gateway's should, instead of failing."""
    clients: list[redis.asyncio.Redis] = []

    def make() -> redis.asyncio.Redis:
        client = redis.asyncio.Redis.from_pool(
            redis.asyncio.BlockingConnectionPool.from_url(REDIS_URL, max_connections=16))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def counter_prefix(redis_prefix: str) -> str:
    """A prefix of the test's own, so tests never see each other's counts."""
    return f"{redis_prefix}:{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["local", "redis"])
def make_counters(request: pytest.FixtureRequest) -> Callable[..., object]:
    """Builds counters of each implementation; with Redis, each call is another replica
    sharing the test's keys."""
    if request.param == "local":
        made: list[LocalAdmissionCounters] = []

        def make_local(**kwargs: float) -> LocalAdmissionCounters:
            if not made:
                made.append(LocalAdmissionCounters(**kwargs))
            return made[0]

        return make_local
    factory = request.getfixturevalue("redis_client_factory")
    prefix = request.getfixturevalue("counter_prefix")
    return lambda **kwargs: RedisAdmissionCounters(factory(), prefix=prefix, **kwargs)
