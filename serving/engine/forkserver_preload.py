"""Imported by an engine forkserver as its first preload (serving.engine.warm_processes):
what the server needs before it imports the rest or forks anything.

- Its title names it, so that an operator's `ps` and `aifactory down`'s search for orphaned
  engines (deployments.cli) can tell it from other Python processes, and replicas can
  check that a node's published server is one (serving.engine.node_forkserver).
- setproctitle is set up here, once: it needs the process's original environment block,
  and every forked process replaces its environment with its parent's (EnvironProcess);
  set up afterwards, vLLM's "VLLM::EngineCore" title would silently not show.
"""

import setproctitle

from serving.engine.warm_processes import FORKSERVER_TITLE

setproctitle.setproctitle(FORKSERVER_TITLE)
