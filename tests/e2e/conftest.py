"""One real platform per test session: Ray + vLLM CPU engines + gateway, started by the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).parent
CONFIG = HERE / "platform.yaml"
PORT = 18000
BASE_URL = f"http://127.0.0.1:{PORT}"
ENDPOINTS = ["demo", "demo-remote"]
# The first admin key, handed to the platform the way an operator would.
ADMIN_KEY = "afk_" + uuid.uuid4().hex


def aifactory(*args: str, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )


def leftover_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
    keep = ("ray::", "raylet", "gcs_server", "VLLM::", "EngineCore", "haproxy")
    return [line for line in out.splitlines()[1:]
            if any(k in line for k in keep) and not line.split()[1].startswith("Z")]


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def platform(platform_env):
    """The running platform's base URL. Teardown runs `aifactory down` and checks that no
    Ray or vLLM process is left behind."""
    started = time.monotonic()
    up = aifactory("up", "--detach", "--config", str(CONFIG), env=platform_env)
    if up.returncode != 0:
        aifactory("down", env=platform_env)
        pytest.fail(f"aifactory up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
    print(f"platform up in {time.monotonic() - started:.0f}s", file=sys.stderr)
    yield {"url": BASE_URL, "home": Path(platform_env["AIFACTORY_HOME"]), "env": platform_env,
           "up_stdout": up.stdout}

    import ray

    if ray.is_initialized():
        ray.shutdown()
    down = aifactory("down", env=platform_env, timeout=300)
    assert down.returncode == 0, down.stderr
    deadline = time.monotonic() + 30
    while leftover_processes() and time.monotonic() < deadline:
        time.sleep(1)
    assert leftover_processes() == [], "aifactory down left processes behind"


@pytest.fixture(scope="session")
def store(platform):
    """The platform's own tenancy store (SQLite under its data dir), to seed keys and quotas
    and to read the ledger."""
    from serving.tenancy import Store, default_database_url

    store = Store(default_database_url(platform["home"]))
    yield store
    store.close()


@pytest.fixture(scope="session")
def keys(store) -> dict[str, str]:
    """An inference key per tenant of platform.yaml."""
    return {t: store.create_key(t).plaintext for t in ("acme", "globex")}


def openai_client(platform, key: str, *, async_: bool = False):
    import openai

    cls = openai.AsyncOpenAI if async_ else openai.OpenAI
    return cls(base_url=platform["url"] + "/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="session")
def client(platform, keys):
    return openai_client(platform, keys["acme"])


@pytest.fixture(scope="session")
def async_client(platform, keys):
    return openai_client(platform, keys["acme"], async_=True)


@pytest.fixture(scope="session")
def auth(keys) -> dict[str, str]:
    """Headers for raw HTTP calls as tenant acme."""
    return {"authorization": f"Bearer {keys['acme']}"}


@pytest.fixture(scope="session")
def tokenizer(platform):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(platform["home"] / "models" / "demo"))


@pytest.fixture(scope="session")
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
