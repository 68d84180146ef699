"""One warm forkserver per Ray node (serving.engine.node_forkserver), each kept by a
detached actor of no CPU: `aifactory up` starts them before the application, so that the
platform's first engines share one server's imports per node instead of each replica
starting its own, and an endpoint woken from zero later forks its engine at once. A node
that joins later has none; its replicas start their own servers, as without this."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

ACTOR_NAMESPACE = "aifactory"
START_TIMEOUT_S = 60


def actor_name(node_id: str) -> str:
    return f"aifactory-forkserver-{node_id}"


class NodeForkserverKeeper:
    """Ray actor: starts the node's server in its own process (it stays up while this
    process holds its "alive" descriptor) and publishes it for the node's replicas."""

    def __init__(self) -> None:
        import multiprocessing.forkserver as forkserver

        import ray

        from serving.engine.node_forkserver import NodeForkserver, publish, wait_until_named
        from serving.engine.warm_processes import start_forkserver
        from serving.targets.links.directory import gcs_client

        if not start_forkserver():
            self.entry = None  # AIFACTORY_ENGINE_PROCESSES=spawn: nothing to keep
            return
        server = forkserver._forkserver
        self.entry = NodeForkserver(ray.get_runtime_context().get_node_id(),
                                    server._forkserver_address, server._forkserver_pid)
        if not wait_until_named(self.entry.pid):
            logger.warning("the node's forkserver did not start; replicas start their own")
            return
        publish(self.entry, gcs_client())

    def pid(self) -> int | None:
        return self.entry.pid if self.entry is not None else None


def hosts_engines(node: dict) -> bool:
    """A node with CPUs or GPUs to schedule on (a KubeRay head of `num-cpus: 0` has none)."""
    resources = node.get("Resources") or {}
    return resources.get("CPU", 0) > 0 or resources.get("GPU", 0) > 0


def start_node_forkservers() -> int:
    """On every alive node, the keeper (an existing one is kept); returns how many run."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    keeper = ray.remote(num_cpus=0)(NodeForkserverKeeper)
    keepers = [
        keeper.options(name=actor_name(node["NodeID"]), namespace=ACTOR_NAMESPACE,
                       lifetime="detached", get_if_exists=True, max_restarts=-1,
                       scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"],
                                                                          soft=False)).remote()
        for node in ray.nodes() if node.get("Alive") and hosts_engines(node)
    ]
    try:
        pids = ray.get([k.pid.remote() for k in keepers], timeout=START_TIMEOUT_S)
    except Exception as exc:  # replicas then start servers of their own
        logger.warning("node forkservers did not start: %r", exc)
        return 0
    return sum(pid is not None for pid in pids)


def stop_node_forkservers() -> None:
    """On a shared cluster, with the platform's application: the keepers and their entries
    (their servers exit with them)."""
    import ray

    from serving.engine.node_forkserver import withdraw
    from serving.targets.links.directory import gcs_client

    for node in ray.nodes():
        try:
            ray.kill(ray.get_actor(actor_name(node["NodeID"]), namespace=ACTOR_NAMESPACE),
                     no_restart=True)
        except ValueError:
            continue  # none on this node
        withdraw(node["NodeID"], gcs_client())
