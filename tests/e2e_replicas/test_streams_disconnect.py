"""Behind HAProxy and two gateway replicas, a client that disconnects mid-stream frees its
engine request, as it does through one gateway (tests/e2e/test_disconnect.py). (Named to run
after test_replicas: requests of acme in the minute it sets a request limit would count.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx

# Reads the engine's unfinished requests from vLLM's own output processor, from a process of
# its own so that the test process never joins the cluster. The process joins once and then
# answers each line it reads: joining takes seconds, longer than the streams would last.
_ENGINE_LOAD = """
import asyncio, json, sys, ray
from ray import serve
from deployments.app import APP_NAME
from deployments.engine import engine_deployment_name
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
handle = serve.get_deployment_handle(engine_deployment_name("shared"), APP_NAME)
async def main():
    for _ in sys.stdin:
        print(json.dumps(await handle.load.remote()), flush=True)
asyncio.run(main())
"""


class EngineProbe:
    def __init__(self) -> None:
        self._process = subprocess.Popen([sys.executable, "-c", _ENGINE_LOAD], text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def running(self) -> float:
        self._process.stdin.write("load\n")
        self._process.stdin.flush()
        while not (line := self._process.stdout.readline()).startswith("{"):
            assert line, "the engine probe ended"
        return json.loads(line)["unfinished_requests"]

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=30)


def test_disconnect_mid_stream_behind_haproxy_aborts_engine_requests(platform, store):
    probe = EngineProbe()
    assert probe.running() == 0  # joined the cluster before any stream starts
    key = store.create_key("acme").plaintext
    auth = {"authorization": f"Bearer {key}"}
    # Eight choices each: 32 sequences of 480 steps keep the engine busy for seconds, whatever
    # the sockets between it and the clients buffer (a single stream's 480 small events fit in
    # them, and the engine finished before a stalled client was even looked at).
    body = {"model": "shared", "prompt": "go on", "max_tokens": 480, "stream": True,
            "ignore_eos": True, "n": 8}
    clients = [httpx.Client(base_url=platform["url"], timeout=60, headers=auth) for _ in range(4)]
    streams = []
    for http in clients:
        ctx = http.stream("POST", "/v1/completions", json=body)
        resp = ctx.__enter__()
        assert resp.status_code == 200
        lines = resp.iter_lines()
        assert any(next(lines).startswith("data: {") for _ in range(3))
        streams.append((resp, lines))  # the iterator kept: dropping it closes early
    assert probe.running() >= 4  # vLLM may count each choice
    for (resp, _), http in zip(streams, clients):
        resp.close()
        http.close()
    # Within 2 s, as through one gateway: well before 480 steps of 32 sequences would end.
    deadline = time.monotonic() + 2
    while (running := probe.running()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running == 0, "the engine still runs requests whose clients went away"
    probe.close()
    with httpx.Client(base_url=platform["url"], timeout=60, headers=auth) as http:
        assert http.post("/v1/completions", json={"model": "shared", "prompt": "x",
                                                  "max_tokens": 2}).status_code == 200
