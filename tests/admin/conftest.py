"""Fixtures for the admin tests: migrated stores on SQLite and PostgreSQL, served through the
admin and tenant self-service routers by a real uvicorn server on 127.0.0.1, and clients for
it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.admin import build_admin_router, build_tenant_router, ensure_admin_tenant
from serving.tenancy import KeyScope, Store, audit, upgrade
from serving.tenancy.models import Base
from tests.manual_clock import Clock
from tests.postgres_schemas import POSTGRES_URL, Postgres

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own AIFACTORY_HOME and none of the caller's admin settings."""
    home = tmp_path / "aifactory-home"
    monkeypatch.setenv("AIFACTORY_HOME", str(home))
    for name in ("AIFACTORY_ADMIN_KEY", "AIFACTORY_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    pg = Postgres(POSTGRES_URL, prefix="admin")
    yield pg
    pg.drop_all()


# The server: one uvicorn per session, serving whichever app the current test mounted.


class LiveServer:
    def __init__(self) -> None:
        self.app: ASGIApp | None = None
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))  # a free port, held from here on: no race for it
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(self._serve, interface="asgi3",
                                                     lifespan="off", log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [listener]},
                                        name="admin-test-server", daemon=True)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "no app mounted"
        await self.app(scope, receive, send)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                pytest.fail("the test server did not start", pytrace=False)
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server() -> Iterator[LiveServer]:
    server = LiveServer()
    server.start()
    yield server
    server.stop()


@dataclass
class Api:
    """The admin API of one test: its store, the clock, an admin key and a client using it."""

    url: str
    store: Store
    clock: Clock
    admin_key: str
    client: httpx.Client

    def as_key(self, key: str | None) -> httpx.Client:
        """A client presenting `key` (or no Authorization header at all for None)."""
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        return httpx.Client(base_url=self.client.base_url, headers=headers, timeout=10)

    def snapshot(self) -> tuple:
        """Everything the store holds that a refused request could have touched, and the
        audit log (a refused request logs nothing)."""
        tenants = self.store.list_tenants()
        endpoints = self.store.list_endpoints()
        return (tenants, endpoints, [self.store.list_keys(t.name) for t in tenants],
                [self.store.get_quota(t.name, e) for t in tenants
                 for e in [None, *(e.name for e in endpoints)]],
                audit.read(self.store.engine, audit.AuditQuery(limit=audit.MAX_LIMIT)).entries)


@dataclass
class Backend:
    """One migrated database with its store and the admin app over it, built once per run:
    building the app costs more than a test, so tests empty the tables instead."""

    database_url: str
    store: Store
    clock: Clock
    app: FastAPI

    def empty(self) -> None:
        with self.store.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
                conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            else:
                for table in reversed(Base.metadata.sorted_tables):
                    if table.name != "admin_audit":
                        conn.execute(table.delete())
                _empty_sqlite_audit_log(conn)


def _empty_sqlite_audit_log(conn: sa.Connection) -> None:
    """The audit log refuses DELETE (migration 0006's triggers): lift them, empty the log,
    and put them back as they were. (TRUNCATE, as on PostgreSQL, passes row triggers.)"""
    triggers = conn.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = "
                                    "'trigger' AND tbl_name = 'admin_audit'")).all()
    assert triggers, "the audit log has no triggers to lift"
    for name, _ in triggers:
        conn.execute(sa.text(f'DROP TRIGGER "{name}"'))
    conn.execute(sa.text("DELETE FROM admin_audit"))
    for _, sql in triggers:
        conn.execute(sa.text(sql))


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('admin')}/aifactory.db"
    else:
        url = request.getfixturevalue("postgres").new_schema()
    upgrade(url)
    clock = Clock(datetime.now(UTC))
    store = Store(url, clock=clock)
    app = FastAPI()
    app.include_router(build_admin_router(store, clock=clock), prefix="/admin/v1")
    app.include_router(build_tenant_router(store, clock=clock), prefix="/tenant/v1")
    yield Backend(url, store, clock, app)
    store.close()


@pytest.fixture
def database_url(backend: Backend) -> str:
    """A migrated, empty tenancy database on each backend."""
    backend.empty()
    return backend.database_url


@pytest.fixture
def clock(backend: Backend) -> Clock:
    backend.clock.now = datetime.now(UTC).replace(microsecond=0)
    return backend.clock


@pytest.fixture
def store(backend: Backend, database_url: str, clock: Clock) -> Store:
    return backend.store


@pytest.fixture
def api(live_server: LiveServer, backend: Backend, store: Store, clock: Clock) -> Iterator[Api]:
    live_server.app = backend.app
    ensure_admin_tenant(store)
    admin_key = store.create_key("admin", scope=KeyScope.ADMIN).plaintext
    with httpx.Client(base_url=f"{live_server.url}/admin/v1", timeout=10,
                      headers={"Authorization": f"Bearer {admin_key}"}) as client:
        yield Api(live_server.url, store, clock, admin_key, client)
    live_server.app = None
