"""A platform with two gateway replicas (HAProxy ingress), Redis counters and a PostgreSQL
store in a database of its own."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.platform_helpers import running_platform
from tests.postgres_schemas import fresh_database
from tests.tcp_proxy import CuttableProxy

HERE = Path(__file__).parent
BASE_URL = "http://127.0.0.1:18001"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
# Kills a gateway replica and does not wait for Serve to replace it (test_replicas checks
# that Serve does): it runs after every other test of this package, which need both.
RUNS_LAST = "test_replicas_batch"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    last = [item for item in items if item.path.parent == HERE and item.path.stem == RUNS_LAST]
    for item in last:
        items.remove(item)
    ours = [n for n, item in enumerate(items) if item.path.parent == HERE]
    at = ours[-1] + 1 if ours else len(items)
    items[at:at] = last


@pytest.fixture(scope="package")
def database_url():
    yield from fresh_database(POSTGRES)


@pytest.fixture(scope="package")
def store_link():
    """The platform reaches PostgreSQL through this relay, which a test may cut."""
    return CuttableProxy(("127.0.0.1", 5432))


@pytest.fixture(scope="package")
def platform(tmp_path_factory, database_url, store_link):
    proxied = database_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{store_link.port}/")
    env = {
        **os.environ,
        "AIFACTORY_HOME": str(tmp_path_factory.mktemp("aifactory-replicas")),
        "AIFACTORY_DATABASE_URL": proxied,
        "AIFACTORY_REDIS_URL": "redis://127.0.0.1:6379/0",
        "AIFACTORY_REDIS_PREFIX": f"aifactory-test-{uuid.uuid4().hex[:12]}",
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("AIFACTORY_ADMIN_KEY", None)
    yield from running_platform(HERE / "platform.yaml", env, BASE_URL)


@pytest.fixture(scope="package")
def store(platform, database_url):
    from serving.tenancy import Store

    store = Store(database_url)
    yield store
    store.close()
