"""A real two-node Ray cluster on this machine, and the platform deployed onto it with
`aifactory up --address`, as an operator would on KubeRay or a Slurm allocation.

The head (no CPUs for work, the `gateway_node` resource) and the worker (CPUs and the
`engine_node` resource) are separate `ray start` processes with raylets of their own; on one
host each gets its own fixed ports (Ray would pick some of them at random, and the dashboard
agent's default is fixed) and its own worker port range."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.platform_helpers import TEST_RAY_ENV, aifactory, leftover_processes
from tests.postgres_schemas import fresh_database

HERE = Path(__file__).parent
BASE_URL = "http://127.0.0.1:18004"
HEAD_ADDRESS = "127.0.0.1:6391"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
ADMIN_KEY = "afk_" + uuid.uuid4().hex
RAY = str(Path(sys.executable).with_name("ray"))

HEAD_START = [
    RAY, "start", "--head", "--node-ip-address=127.0.0.1", "--port=6391",
    "--num-cpus=0", '--resources={"gateway_node": 1}',
    # The state API (which node runs which replica) is served by the dashboard.
    "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--dashboard-port=18265",
    "--dashboard-agent-listen-port=52365", *(
        f"--{name}-port={port}" for name, port in (
            ("node-manager", 6392), ("object-manager", 6393), ("dashboard-agent-grpc", 6394),
            ("metrics-export", 6395), ("runtime-env-agent", 6396))),
    "--min-worker-port=20000", "--max-worker-port=21999", "--disable-usage-stats",
]
WORKER_START = [
    RAY, "start", f"--address={HEAD_ADDRESS}", "--node-ip-address=127.0.0.1",
    "--num-cpus=2", '--resources={"engine_node": 2}',
    "--dashboard-agent-listen-port=52366", *(
        f"--{name}-port={port}" for name, port in (
            ("node-manager", 6402), ("object-manager", 6403), ("dashboard-agent-grpc", 6404),
            ("metrics-export", 6405), ("runtime-env-agent", 6406))),
    "--min-worker-port=22000", "--max-worker-port=23999", "--disable-usage-stats",
]


def _ray(cmd: list[str], env: dict) -> None:
    result = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:3])} failed:\n{result.stdout}\n{result.stderr}")


def _state(what: str) -> list[dict] | None:
    """Ray's state API (`list_nodes`, `list_actors`) for alive entities, asked from a fresh
    process so this test process never joins the cluster; None while the dashboard that
    serves it is not up yet."""
    script = (
        f"import json; from ray.util.state import {what}\n"
        f"print(json.dumps([e.__dict__ for e in {what}(address={HEAD_ADDRESS!r}, "
        "filters=[('state', '=', 'ALIVE')], limit=1000)], default=str))"
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                            text=True, timeout=120)
    return json.loads(result.stdout) if result.returncode == 0 else None


def cluster_nodes() -> list[dict]:
    return _state("list_nodes") or []


def alive_actors() -> list[dict]:
    actors = _state("list_actors")
    assert actors is not None, "Ray's state API did not answer"
    return actors


@pytest.fixture(scope="package")
def cluster():
    """Head and worker node; yields {"head": node id, "worker": node id}. Stops both and
    checks that no Ray, vLLM or HAProxy process is left."""
    assert leftover_processes() == [], "Ray processes of an earlier run are still running"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **TEST_RAY_ENV}
    env.pop("RAY_ADDRESS", None)
    try:
        _ray(HEAD_START, env)
        _ray(WORKER_START, env)
        deadline = time.monotonic() + 60
        while len(nodes := cluster_nodes()) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert len(nodes) == 2, nodes
        [head] = [n for n in nodes if n["is_head_node"]]
        [worker] = [n for n in nodes if not n["is_head_node"]]
        assert worker["resources_total"].get("engine_node") == 2, worker
        yield {"head": head["node_id"], "worker": worker["node_id"]}
    finally:
        subprocess.run([RAY, "stop", "--force"], check=False, capture_output=True, timeout=120)
    deadline = time.monotonic() + 30
    while leftover_processes() and time.monotonic() < deadline:
        time.sleep(1)
    assert leftover_processes() == [], "stopping the cluster left processes behind"


@pytest.fixture(scope="package")
def database_url():
    yield from fresh_database(POSTGRES)


@pytest.fixture(scope="package")
def platform(cluster, database_url, tmp_path_factory):
    """`aifactory up --address` onto the cluster; `aifactory down` removes the application
    and leaves the cluster running (the `cluster` fixture stops it)."""
    env = {
        **os.environ,
        "AIFACTORY_HOME": str(tmp_path_factory.mktemp("aifactory-multinode")),
        "AIFACTORY_DATABASE_URL": database_url,
        "AIFACTORY_REDIS_URL": "redis://127.0.0.1:6379/0",
        "AIFACTORY_REDIS_PREFIX": f"aifactory-test-{uuid.uuid4().hex[:12]}",
    }
    env["AIFACTORY_ADMIN_KEY"] = ADMIN_KEY
    env.pop("RAY_ADDRESS", None)
    started = time.monotonic()
    up = aifactory("up", "--detach", "--address", HEAD_ADDRESS,
                   "--config", str(HERE / "platform.yaml"), env=env)
    if up.returncode != 0:
        aifactory("down", env=env, timeout=300)
        pytest.fail(f"aifactory up --address failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
    print(f"platform up on the cluster in {time.monotonic() - started:.0f}s", file=sys.stderr)
    yield {"url": BASE_URL, "env": env}
    down = aifactory("down", env=env, timeout=300)
    assert down.returncode == 0, down.stderr


@pytest.fixture(scope="package")
def store(platform, database_url):
    from serving.tenancy import Store

    store = Store(database_url)
    yield store
    store.close()
