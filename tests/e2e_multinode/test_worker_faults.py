"""Faults under load on the two-node cluster: the engine replica's process killed mid-stream,
then the whole worker node killed and started again. Streams cut by a fault end with an error
event and `[DONE]`, never a hang; requests the dead engine had not started are sent again
and served by the replica that replaces it; the ledger holds one record per request, as the
clients saw it. (Named to run after test_two_nodes: it kills what that one uses.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import psutil

from deployments.app import APP_NAME, engine_deployment_name
from serving.tenancy import Outcome
from tests.e2e_multinode.conftest import (
    ADMIN_KEY,
    HEAD_ADDRESS,
    WORKER_START,
    _ray,
    alive_actors,
)
from tests.platform_helpers import TEST_RAY_ENV

ENGINE = engine_deployment_name("remote")
# platform.yaml gives the engine max_num_seqs 2: with six streams, two run and four wait in
# the engine's queue when the fault comes.
STREAMS = 6
MAX_TOKENS = 400
RECOVERY_S = 300


@dataclass
class Stream:
    """One streamed completion as its client saw it."""

    request_id: str
    status: int | None = None
    content_events: int = 0
    tokens_received: int = 0  # the sampled tokens' logprobs, one per token
    completion_tokens: int | None = None  # from the usage event, when the stream got that far
    error_events: list[str] = field(default_factory=list)
    done: bool = False
    failure: str | None = None
    took_s: float = 0.0

    @property
    def broken(self) -> bool:
        return bool(self.error_events)


def run_stream(platform, key: str, stream: Stream) -> None:
    began = time.monotonic()
    try:
        with httpx.Client(base_url=platform["url"], timeout=RECOVERY_S,
                          headers={"authorization": f"Bearer {key}",
                                   "x-client-request-id": stream.request_id}) as http:
            with http.stream("POST", "/v1/completions", json={
                    "model": "remote", "prompt": "a long story", "max_tokens": MAX_TOKENS,
                    "stream": True, "stream_options": {"include_usage": True},
                    "ignore_eos": True, "logprobs": 0}) as response:
                stream.status = response.status_code
                for line in response.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        stream.done = True
                        continue
                    event = json.loads(line[len("data: "):])
                    if "error" in event:
                        stream.error_events.append(line)
                    elif event.get("usage") and not event.get("choices"):
                        stream.completion_tokens = event["usage"]["completion_tokens"]
                    else:
                        stream.content_events += 1
                        stream.tokens_received += len(
                            event["choices"][0]["logprobs"]["tokens"])
    except httpx.HTTPError as exc:  # a hang (timeout) or a cut connection fails the test
        stream.failure = repr(exc)
    stream.took_s = time.monotonic() - began


def start_streams(platform, key: str, n: int) -> tuple[list[Stream], list[threading.Thread]]:
    streams = [Stream(f"fault-{uuid.uuid4().hex[:12]}") for _ in range(n)]
    threads = [threading.Thread(target=run_stream, args=(platform, key, s), daemon=True)
               for s in streams]
    for t in threads:
        t.start()
    return streams, threads


def wait_until(what: str, check, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} not seen within {timeout_s:.0f}s"
        time.sleep(0.05)


class AutoscalerWatch:
    """What the partition controller says of `remote` (target, current), every half second,
    from the admin API, until stopped."""

    def __init__(self, platform) -> None:
        self.url = f"{platform['url']}/admin/v1/autoscaler"
        self.seen: list[tuple[int, int]] = []
        self.actions: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        with httpx.Client(timeout=30, headers={"authorization": f"Bearer {ADMIN_KEY}"}) as http:
            while not self.stop.is_set():
                view = http.get(self.url).json()
                for d in view["endpoints"]:
                    if d["endpoint"] == "remote":
                        self.seen.append((d["target"], d["current"]))
                self.actions = view["actions"]
                time.sleep(0.5)

    def __enter__(self) -> AutoscalerWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def engine_replicas() -> list[dict]:
    return [a for a in alive_actors() if a["class_name"] == f"ServeReplica:{APP_NAME}:{ENGINE}"]


def ledger(store, streams: list[Stream], since: datetime) -> dict[str, object]:
    ids = {s.request_id for s in streams}
    records = store.usage_records("acme", since, datetime.now(UTC) + timedelta(minutes=1))
    return {r.client_request_id: r for r in records if r.client_request_id in ids}


def check_clients_and_ledger(store, streams: list[Stream], since: datetime) -> dict:
    """What every fault test asserts of its streams; returns a summary for the report."""
    for s in streams:
        assert s.failure is None, s
        assert s.status == 200 and s.done, s  # every stream ends with [DONE], none hangs
    broken = [s for s in streams if s.broken]
    served = [s for s in streams if not s.broken]
    assert broken, "no stream was running when the fault came"
    for s in broken:
        assert len(s.error_events) == 1, s
        error = json.loads(s.error_events[0][len("data: "):])["error"]
        assert "failed mid-stream" in error["message"] and error["type"], error
    # Not yet started when the engine died: sent again and served whole by the replacement.
    assert all(s.completion_tokens == MAX_TOKENS for s in served), served
    assert all(s.completion_tokens is None for s in broken), broken
    deadline = time.monotonic() + 60
    while len(records := ledger(store, streams, since)) < len(streams):
        assert time.monotonic() < deadline, (len(records), len(streams))
        time.sleep(1)
    assert len(records) == len(streams)
    for s in broken:
        record = records[s.request_id]
        assert record.outcome == Outcome.ERROR
        # The engine's count at the last event relayed: what the client received.
        assert record.completion_tokens == s.tokens_received
    for s in served:
        record = records[s.request_id]
        assert record.outcome == Outcome.OK
        assert record.completion_tokens == MAX_TOKENS
    return {"streams": len(streams), "broken": len(broken), "served": len(served),
            "recovered_in_s": round(max(s.took_s for s in served), 1) if served else None}


# Joins the cluster from a process of its own (this one never joins), finds the engine
# replica, then kills it the moment it reads a line: the test chooses the moment.
KILL_REPLICA = f"""
import sys, ray
ray.init(address={HEAD_ADDRESS!r}, namespace="serve", logging_level="ERROR",
         log_to_driver=False)
names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
         if a["name"].startswith("SERVE_REPLICA::{APP_NAME}#{ENGINE}#")]
assert len(names) == 1, names
victim = ray.get_actor(names[0], namespace="serve")
print("ready", flush=True)
sys.stdin.readline()
ray.kill(victim, no_restart=True)
print("killed", names[0], flush=True)
"""


def test_engine_replica_killed_mid_stream(platform, store):
    key = store.create_key("acme").plaintext
    [before] = engine_replicas()
    killer = subprocess.Popen([sys.executable, "-c", KILL_REPLICA], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert killer.stdout.readline().strip() == "ready"
    since = datetime.now(UTC) - timedelta(seconds=1)

    streams, threads = start_streams(platform, key, STREAMS)
    wait_until("two streams generating",
               lambda: sum(s.content_events >= 5 for s in streams) >= 2, timeout_s=120)
    with AutoscalerWatch(platform) as watch:
        killed_at = time.time()
        killer.stdin.write("kill\n")
        killer.stdin.flush()
        assert killer.stdout.readline().startswith("killed"), killer.communicate()
        killer.wait(timeout=60)
        for t in threads:
            t.join(timeout=RECOVERY_S + 30)
        wait_until("the controller seeing the replacement",
                   lambda: watch.seen and watch.seen[-1] == (1, 1), timeout_s=60)

    report = check_clients_and_ledger(store, streams, since)
    # The controller saw the replica missing (current 0 against target 1), kept its target
    # (a dead replica is no reason to scale) and saw the replacement running.
    assert (1, 0) in watch.seen, watch.seen
    assert {target for target, _ in watch.seen} == {1}
    assert not [a for a in watch.actions if a["at"] >= killed_at], watch.actions
    # Ray Serve replaced the replica: a new actor runs where the engine may run.
    [after] = engine_replicas()
    assert after["actor_id"] != before["actor_id"]
    assert after["node_id"] == before["node_id"]
    print(f"\nengine replica killed: {json.dumps(report)}")


def _worker_node_processes() -> list[psutil.Process]:
    """The worker node's raylet (found by its node-manager port) and every process under
    it: its Ray workers, agents and their vLLM engine processes."""
    [port] = [a.split("=")[1] for a in WORKER_START if a.startswith("--node-manager-port=")]
    raylets = [p for p in psutil.process_iter(["cmdline"])
               if p.info["cmdline"] and "raylet" in p.info["cmdline"][0]
               and f"--node_manager_port={port}" in p.info["cmdline"]]
    assert len(raylets) == 1, raylets
    return [raylets[0], *raylets[0].children(recursive=True)]


def test_worker_node_killed_and_restarted(platform, store, cluster):
    key = store.create_key("acme").plaintext
    since = datetime.now(UTC) - timedelta(seconds=1)
    streams, threads = start_streams(platform, key, 3)
    wait_until("two streams generating",
               lambda: sum(s.content_events >= 5 for s in streams) >= 2, timeout_s=120)

    # The node dies: every process of it at once, as when a machine loses power.
    victims = _worker_node_processes()
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    killed_at = time.monotonic()
    psutil.wait_procs(victims, timeout=30)
    # Requests keep arriving while the node is down.
    late, late_threads = start_streams(platform, key, 2)
    time.sleep(5)

    # Capacity returns: the node starts again (a new Ray node), and Serve places the engine
    # replica it could not place meanwhile.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **TEST_RAY_ENV}
    env.pop("RAY_ADDRESS", None)
    _ray(WORKER_START, env)
    for t in (*threads, *late_threads):
        t.join(timeout=RECOVERY_S + 30)
    recovered_in = time.monotonic() - killed_at

    report = check_clients_and_ledger(store, streams + late, since)
    assert all(not s.broken for s in late), late  # held, then served by the new replica
    [replica] = engine_replicas()
    assert replica["node_id"] != cluster["worker"]  # on the node that came back
    print(f"\nworker node killed ({len(victims)} processes): {json.dumps(report)}; "
          f"service back {recovered_in:.0f}s after the kill")
