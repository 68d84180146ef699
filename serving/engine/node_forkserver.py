"""A forkserver kept warm on each node, so that an engine replica woken from zero forks its
engine processes at once instead of waiting for a server of its own to import torch and
vLLM (about 14 s of CPU here, the longest step of a wake: README "Cold starts").

A Ray actor per node (deployments.node_forkservers) starts the server and keeps it alive;
it publishes where the server listens in Ray's GCS key-value store under its node's id.
A replica starting on that node uses it (serving.engine.warm_processes.adopt_forkserver)
when the entry names a live process that is such a server; otherwise it starts its own, as
it would without one. The server only ever forks processes of the same user on the same
node (its socket is a file of mode 0600 in a private folder).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from serving.engine.warm_processes import FORKSERVER_TITLE

NAMESPACE = b"aifactory-forkserver"
KV_TIMEOUT_S = 5


@dataclass(frozen=True)
class NodeForkserver:
    node_id: str
    address: str
    pid: int

    def to_json(self) -> bytes:
        return json.dumps({"address": self.address, "pid": self.pid}).encode()

    @classmethod
    def from_entry(cls, node_id: str, raw: bytes | None) -> NodeForkserver | None:
        """None for anything that is not an entry this module wrote."""
        try:
            data = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        address, pid = data.get("address"), data.get("pid")
        if not isinstance(address, str) or not address or "\0" in address[1:]:
            return None
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return None
        return cls(node_id, address, pid)


def is_forkserver(pid: int) -> bool:
    """Whether `pid` is, on this machine, a server this platform started (not a process
    that took a dead server's pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().startswith(FORKSERVER_TITLE.encode())
    except OSError:
        return False


def wait_until_named(pid: int, timeout_s: float = 30.0) -> bool:
    """Whether the server `pid` has named itself within `timeout_s` (its first import), so
    that replicas reading its entry recognise it."""
    deadline = time.monotonic() + timeout_s
    while not is_forkserver(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def usable(entry: NodeForkserver | None) -> bool:
    if entry is None or not is_forkserver(entry.pid):
        return False
    return entry.address.startswith("\0") or os.path.exists(entry.address)


def publish(entry: NodeForkserver, gcs) -> None:
    gcs.internal_kv_put(entry.node_id.encode(), entry.to_json(), True, NAMESPACE,
                        timeout=KV_TIMEOUT_S)


def withdraw(node_id: str, gcs) -> None:
    gcs.internal_kv_del(node_id.encode(), False, NAMESPACE, timeout=KV_TIMEOUT_S)


def this_nodes_forkserver() -> str | None:
    """In a Ray worker: the address of the warm server on its node, if there is a usable one;
    None outside Ray or when none answers."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        from serving.targets.links.directory import gcs_client

        node_id = ray.get_runtime_context().get_node_id()
        raw = gcs_client().internal_kv_get(node_id.encode(), NAMESPACE, timeout=KV_TIMEOUT_S)
    except Exception:  # no GCS answer: the replica starts its own server
        return None
    entry = NodeForkserver.from_entry(node_id, raw)
    return entry.address if usable(entry) else None
