"""Behind HAProxy and two gateway replicas, a client that disconnects mid-stream frees its
engine request, as it does through one gateway (tests/e2e/test_disconnect.py). (Named to run
after test_replicas: requests of acme in the minute it sets a request limit would count.)"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

# Reads the engine's unfinished requests from vLLM's own output processor, from a process of
# its own so that the test process never joins the cluster.
_ENGINE_LOAD = """
import asyncio, json, ray
from ray import serve
from deployments.app import APP_NAME
from deployments.engine import engine_deployment_name
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
handle = serve.get_deployment_handle(engine_deployment_name("shared"), APP_NAME)
async def main():
    print(json.dumps(await handle.load.remote()))
asyncio.run(main())
"""


def engine_running() -> float:
    out = subprocess.run([sys.executable, "-c", _ENGINE_LOAD], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    import json

    return json.loads(out.strip().splitlines()[-1])["unfinished_requests"]


def test_disconnect_mid_stream_behind_haproxy_aborts_engine_requests(platform, store):
    key = store.create_key("acme").plaintext
    auth = {"authorization": f"Bearer {key}"}
    body = {"model": "shared", "prompt": "go on", "max_tokens": 480, "stream": True,
            "ignore_eos": True}
    clients = [httpx.Client(base_url=platform["url"], timeout=60, headers=auth) for _ in range(4)]
    streams = []
    for http in clients:
        ctx = http.stream("POST", "/v1/completions", json=body)
        resp = ctx.__enter__()
        assert resp.status_code == 200
        lines = resp.iter_lines()
        assert any(next(lines).startswith("data: {") for _ in range(3))
        streams.append((resp, lines))  # the iterator kept: dropping it closes early
    assert engine_running() == 4
    for (resp, _), http in zip(streams, clients):
        resp.close()
        http.close()
    deadline = time.monotonic() + 60
    while (running := engine_running()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert running == 0, "the engine still runs requests whose clients went away"
    with httpx.Client(base_url=platform["url"], timeout=60, headers=auth) as http:
        assert http.post("/v1/completions", json={"model": "shared", "prompt": "x",
                                                  "max_tokens": 2}).status_code == 200
