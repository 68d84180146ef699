"""Every engine of the running platform was forked from the warm server its node keeps
(serving.engine.warm_processes, serving.engine.node_forkserver): vLLM's engine process and
its worker are children of that server, not spawned cold by their replica. Read off the
machine's process table: these tests run on the platform's own machine."""

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


def test_every_engine_forks_from_the_warm_server_its_node_keeps(client):
    # Each engine answers first (demo-remote's replica is the autoscaler's to start).
    for model in ("demo", "demo-remote"):
        assert client.completions.create(model=model, prompt="hi", max_tokens=1).choices
    assert client.embeddings.create(model="demo-embed", input="hi").data
    table = process_table()
    shown = "\n".join(f"{pid} {ppid} {args}" for pid, (ppid, args) in table.items()
                      if args.startswith(("ray::", "VLLM::", "aifactory::")))
    servers = {pid for pid, (ppid, args) in table.items() if args.startswith(FORKSERVER_TITLE)}
    # One server, kept by the node's keeper actor (deployments.node_forkservers); a replica
    # whose engine started before it was named would have its own.
    kept = [pid for pid in servers
            if table.get(table[pid][0], (0, ""))[1].startswith("ray::NodeForkserverKeeper")]
    assert len(kept) == 1, shown
    engines = [(pid, ppid) for pid, (ppid, args) in table.items()
               if args.startswith(("VLLM::EngineCore", "VLLM::Worker"))]
    # demo (in the gateway replica), demo-remote and demo-embed at least: an engine process
    # and a worker each, all forked from the node's server (test_prometheus's killed
    # replica leaves its engine there too, until `aifactory down` ends it).
    assert sum(ppid == kept[0] for _, ppid in engines) >= 6, shown
    # None was spawned by its replica.
    assert all(ppid in servers for _, ppid in engines), shown
