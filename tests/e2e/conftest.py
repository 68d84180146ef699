"""One real platform for this package's tests: Ray + vLLM CPU engines + gateway, started by
the CLI."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.platform_helpers import aifactory, running_platform  # noqa: F401 (used by tests)

HERE = Path(__file__).parent
CONFIG = HERE / "platform.yaml"
PORT = 18000
BASE_URL = f"http://127.0.0.1:{PORT}"
ENDPOINTS = ["demo", "demo-remote"]  # the generating endpoints
EMBED_ENDPOINT = "demo-embed"
ALL_ENDPOINTS = [*ENDPOINTS, EMBED_ENDPOINT]
# The first admin key, handed to the platform the way an operator would.
ADMIN_KEY = "afk_" + uuid.uuid4().hex


@pytest.fixture(scope="package")
def platform_env(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("aifactory-home")
    env = {
        **os.environ,
        "AIFACTORY_HOME": str(home),
        "AIFACTORY_REDIS_URL": "redis://127.0.0.1:6379/0",
        # Counters outlive a test run in Redis; each run counts under its own prefix.
        "AIFACTORY_REDIS_PREFIX": f"aifactory-test-{uuid.uuid4().hex[:12]}",
        "AIFACTORY_ADMIN_KEY": ADMIN_KEY,
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("AIFACTORY_DATABASE_URL", None)
    return env


@pytest.fixture(scope="package")
def platform(platform_env):
    """The running platform. Teardown runs `aifactory down` and checks that no Ray or vLLM
    process is left behind."""
    yield from running_platform(CONFIG, platform_env, BASE_URL)


@pytest.fixture(scope="package")
def store(platform):
    """The platform's own tenancy store (SQLite under its data dir), to seed keys and quotas
    and to read the ledger."""
    from serving.tenancy import Store, default_database_url

    store = Store(default_database_url(platform["home"]))
    yield store
    store.close()


@pytest.fixture(scope="package")
def keys(store) -> dict[str, str]:
    """An inference key per tenant of platform.yaml."""
    return {t: store.create_key(t).plaintext for t in ("acme", "globex")}


def openai_client(platform, key: str, *, async_: bool = False):
    import openai

    cls = openai.AsyncOpenAI if async_ else openai.OpenAI
    return cls(base_url=platform["url"] + "/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="package")
def client(platform, keys):
    return openai_client(platform, keys["acme"])


@pytest.fixture(scope="package")
async def async_client(platform, keys):
    # Closed here, on the loop it ran on: see tests/async_clients.py for what an async client
    # left to the garbage collector does to the connections made after it.
    async with openai_client(platform, keys["acme"], async_=True) as client:
        yield client


@pytest.fixture(scope="package")
def auth(keys) -> dict[str, str]:
    """Headers for raw HTTP calls as tenant acme."""
    return {"authorization": f"Bearer {keys['acme']}"}


@pytest.fixture(scope="package")
def tokenizer(platform):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(platform["home"] / "models" / "demo"))


@pytest.fixture(scope="package")
def serve_handles(platform):
    """Handles to the replicas, for reading engine state the HTTP API does not show."""
    import ray
    from ray import serve

    from deployments.app import APP_NAME, GATEWAY, engine_deployment_name

    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    return {
        "demo": serve.get_deployment_handle(GATEWAY, APP_NAME),
        "demo-remote": serve.get_deployment_handle(engine_deployment_name("demo-remote"), APP_NAME),
    }
