"""Imported by an engine replica's forkserver as its last preload (serving.engine.
warm_processes): what the server needs before it forks anything.

- Its title names it, so that an operator's `ps` and `aifactory down`'s search for orphaned
  engines (deployments.cli) can tell it from other Python processes: after a replica is
  killed, the server outlives it as the parent of the engine processes it forked.
- setproctitle is set up here, once: it needs the process's original environment block,
  and every forked process replaces its environment with its parent's (EnvironProcess);
  set up afterwards, vLLM's "VLLM::EngineCore" title would silently not show.
"""

import setproctitle

from serving.engine.warm_processes import FORKSERVER_TITLE

setproctitle.setproctitle(FORKSERVER_TITLE)
