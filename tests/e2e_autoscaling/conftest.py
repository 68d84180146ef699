"""A platform whose two engine endpoints are sized by the live partition autoscaler."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.platform_helpers import running_platform

HERE = Path(__file__).parent
BASE_URL = "http://127.0.0.1:18002"
ADMIN_KEY = "afk_" + uuid.uuid4().hex


@pytest.fixture(scope="package")
def platform(tmp_path_factory):
    env = {
        **os.environ,
        "AIFACTORY_HOME": str(tmp_path_factory.mktemp("aifactory-autoscaling")),
        "AIFACTORY_ADMIN_KEY": ADMIN_KEY,
    }
    for name in ("RAY_ADDRESS", "AIFACTORY_DATABASE_URL", "AIFACTORY_REDIS_URL"):
        env.pop(name, None)
    # In the foreground, as the README's first command runs it.
    yield from running_platform(HERE / "platform.yaml", env, BASE_URL, foreground=True)


@pytest.fixture(scope="package")
def acme_key(platform) -> str:
    from serving.tenancy import Store, default_database_url

    store = Store(default_database_url(platform["home"]))
    try:
        return store.create_key("acme").plaintext
    finally:
        store.close()
