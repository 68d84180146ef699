"""An endpoint created through the admin API is deployed at once (an engine deployment of the
`aifactory-endpoints` Ray Serve application), served to its owner only, and drained when
deleted: a stream in flight finishes, new requests get 404, and its deployment goes away.
Refused deployments change nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from serving.tenancy import Outcome
from tests.e2e.conftest import ADMIN_KEY, openai_client
from tests.platform_helpers import aifactory

NAME = "popup"
APP = "aifactory-endpoints"
DEPLOYMENT = f"engine-{NAME}"
ENGINE = {"max_model_len": 512, "dtype": "bfloat16", "kv_cache_memory_bytes": 134217728,
          "enforce_eager": True}

SERVE_DEPLOYMENTS = """
import json, ray
from ray import serve
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
print(json.dumps({name: sorted(app.deployments)
                  for name, app in serve.status().applications.items()}))
"""


def created_deployments() -> list[str]:
    """The deployments of the application holding created endpoints (none: no such app)."""
    out = subprocess.run([sys.executable, "-c", SERVE_DEPLOYMENTS], capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]).get(APP, [])


@pytest.fixture
def admin(platform):
    with httpx.Client(base_url=platform["url"] + "/admin/v1", timeout=120,
                      headers={"authorization": f"Bearer {ADMIN_KEY}"}) as http:
        yield http


@pytest.mark.parametrize("deployment, status, says", [
    ({"model": "builtin:demo", "engine": {"dtype": "bfloat16"}}, 400, "max_model_len"),
    ({"model": "builtin:demo", "colocated": True, "engine": ENGINE}, 400, "colocated"),
    ({"model": "/nowhere", "engine": ENGINE}, 400, "not a model folder"),
    # 8 slots; demo and demo-remote (at most 1 replica) hold 2.
    ({"model": "builtin:demo", "replicas": 7, "engine": ENGINE}, 409, "do not fit"),
])
def test_a_deployment_the_platform_cannot_run_is_refused_and_changes_nothing(
        admin, deployment, status, says):
    response = admin.post("/endpoints", json={"name": NAME, "owner": "globex",
                                              "deployment": deployment})
    assert response.status_code == status, response.text
    assert says in response.json()["error"]["message"]
    assert NAME not in [e["name"] for e in admin.get("/endpoints").json()["data"]]
    assert DEPLOYMENT not in created_deployments()


def test_created_endpoint_is_deployed_served_to_its_owner_and_drained_on_delete(
        platform, store, keys, admin):
    since = datetime.now(UTC) - timedelta(seconds=1)
    created = aifactory(
        "endpoint", "create", NAME, "--owner", "globex", "--model", "builtin:demo",
        "--max-model-len", "512", *(f"--engine-arg={k}={str(v).lower()}"
                                    for k, v in ENGINE.items() if k != "max_model_len"),
        "--json", env=platform["env"], timeout=120)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["deployment"]["engine"]["max_model_len"] == 512
    assert DEPLOYMENT in created_deployments()

    # The request waits in the gateway while the new engine starts.
    globex = openai_client(platform, keys["globex"]).with_options(timeout=300)
    reply = globex.completions.create(model=NAME, prompt="hello", max_tokens=4)
    assert reply.usage.completion_tokens == 4
    assert NAME in [m.id for m in globex.models.list()]
    with pytest.raises(openai.NotFoundError):  # another tenant's: as if it did not exist
        openai_client(platform, keys["acme"]).completions.create(
            model=NAME, prompt="hello", max_tokens=4)

    # Deleted while a stream is in flight: the stream finishes, new requests get 404.
    chunks: list = []
    stream = globex.completions.create(model=NAME, prompt="a long story", max_tokens=480,
                                       stream=True, extra_body={"ignore_eos": True})
    reader = threading.Thread(target=lambda: chunks.extend(stream), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while len(chunks) < 5:
        assert time.monotonic() < deadline and reader.is_alive(), chunks
        time.sleep(0.01)
    deleted = admin.delete(f"/endpoints/{NAME}")
    at_delete = len(chunks)
    assert deleted.status_code == 200, deleted.text
    with pytest.raises(openai.NotFoundError):
        globex.completions.create(model=NAME, prompt="hello", max_tokens=4)
    reader.join(timeout=120)
    assert len(chunks) > at_delete, "the stream was not in flight at the delete"
    assert chunks[-1].choices[0].finish_reason == "length"

    deadline = time.monotonic() + 120
    while DEPLOYMENT in created_deployments():
        assert time.monotonic() < deadline, "the deleted endpoint's deployment is still there"
        time.sleep(2)
    # Both served requests are in the ledger under the endpoint; the refused ones (404) never
    # reached admission.
    records = [r for r in store.usage_records("globex", since,
                                              datetime.now(UTC) + timedelta(minutes=1))
               if r.endpoint == NAME]
    assert sorted(r.outcome for r in records) == [Outcome.OK, Outcome.OK]
    assert sorted(r.completion_tokens for r in records) == [4, 480]
