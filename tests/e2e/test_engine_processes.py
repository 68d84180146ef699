"""Every engine of the running platform was started from its replica's forkserver
(serving.engine.warm_processes): vLLM's engine process and its worker are the children of a
server the replica started, not spawned cold. Read off the machine's process table: these
tests run on the platform's own machine."""

from __future__ import annotations

import subprocess

from serving.engine.warm_processes import FORKSERVER_TITLE


def process_table() -> dict[int, tuple[int, str]]:
    out = subprocess.run(["ps", "-eo", "pid,ppid,stat,args"], capture_output=True, text=True,
                         check=True).stdout
    table = {}
    for line in out.splitlines()[1:]:
        pid, ppid, stat, *args = line.split(None, 3)
        if not stat.startswith("Z"):
            table[int(pid)] = (int(ppid), args[0].strip() if args else "")
    return table


def test_each_engine_replica_forks_its_engine_and_worker_from_its_own_forkserver(client):
    # Each engine answers first (demo-remote's replica is the autoscaler's to start).
    for model in ("demo", "demo-remote"):
        assert client.completions.create(model=model, prompt="hi", max_tokens=1).choices
    assert client.embeddings.create(model="demo-embed", input="hi").data
    table = process_table()
    shown = "\n".join(f"{pid} {ppid} {args}" for pid, (ppid, args) in table.items()
                      if args.startswith(("ray::", "VLLM::", "aifactory::")))
    # Servers whose replica is alive (test_prometheus kills one replica; what it leaves
    # behind is `aifactory down`'s to end, and the end-to-end teardown checks that it does).
    servers = {pid for pid, (ppid, args) in table.items()
               if args.startswith(FORKSERVER_TITLE) and table.get(ppid, (0, ""))[1]
               .startswith("ray::")}
    children = {server: sorted(args for pid, (ppid, args) in table.items() if ppid == server)
                for server in servers}
    # demo (in the gateway replica), demo-remote and demo-embed at least; a created
    # endpoint's replicas may be up too.
    assert len(servers) >= 3, shown
    for server, names in children.items():
        assert names == ["VLLM::EngineCore", "VLLM::Worker"], (server, names, shown)
    # No engine of a live replica was spawned around its server.
    replicas = {pid for pid, (_, args) in table.items() if args.startswith("ray::")}
    spawned = [pid for pid, (ppid, args) in table.items()
               if args.startswith("VLLM::EngineCore") and ppid in replicas]
    assert spawned == [], shown
