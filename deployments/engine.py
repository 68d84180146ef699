"""The engine deployment: one Ray Serve replica hosting one vLLM engine for one endpoint, and
the Serve options it runs with. Its requests arrive over engine links
(serving.targets.link), not through Serve: Serve places, health-checks, scales and drains its
replicas."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from deployments.config import EndpointConfig, PartitionConfig
from deployments.replica_logging import log_to_serve_replica_log
from serving.engine import EngineHost
from serving.engine.start_phases import Phase
from serving.engine.start_progress import StartProgress, record_start
from serving.engine.stats import EngineLoadRecorder
from serving.targets.links import LinkServer
from serving.targets.links.directory import LinkPublisher

logger = logging.getLogger(__name__)

LOAD_REPORT_PERIOD_S = 1.0
# Engines take minutes to load weights on a GPU node; Serve must not give up on them earlier.
ENGINE_HEALTH_CHECK_PERIOD_S = 10
ENGINE_HEALTH_CHECK_TIMEOUT_S = 30
ENGINE_GRACEFUL_SHUTDOWN_S = 20
# Of that, requests in flight on the replica's links get this long to finish (Serve's own
# drain of the calls it carries, and the engine's shutdown, take the rest).
LINK_DRAIN_S = 15


def engine_deployment_name(endpoint: str) -> str:
    return f"engine-{endpoint}"


class EngineDeployment:
    """Ray Serve replica class (wrapped with `serve.deployment` by the app builder). It
    serves the gateways' links with its engine, publishes where they listen, and drains
    them before it stops."""

    async def __init__(self, name: str, model_path: str, engine_args: dict[str, Any],
                       link_secret: str, autoscaler=None) -> None:
        """`link_secret`: the platform's engine-link secret (hex); `autoscaler`: the
        partition controller's handle when this endpoint is autoscaled; the replica then
        reports its engine's load to it every LOAD_REPORT_PERIOD_S."""
        import ray
        from ray import serve

        log_to_serve_replica_log()
        self.name = name
        context = serve.get_replica_context()
        replica = context.replica_id.unique_id
        self._start = StartProgress(context.app_name, context.deployment, replica, name)
        self._start.mark(Phase.ENGINE_PROCESS)
        self._start.start()
        recorder = EngineLoadRecorder() if autoscaler is not None else None
        loggers = [recorder.stat_logger_factory()] if recorder is not None else []
        self.host = await EngineHost.start(model_path, name, engine_args, stat_loggers=loggers)
        self._start.mark(Phase.LINKING)
        self._links = LinkServer(self.host.handle, bytes.fromhex(link_secret),
                                 ray.util.get_node_ip_address())
        host, port = await self._links.start()
        self._publisher = LinkPublisher(context.app_name, context.deployment, replica, host, port)
        await self._publisher.publish()
        record_start(name, await self._start.ready())
        self._reporting = None
        if recorder is not None:
            self._reporting = asyncio.get_running_loop().create_task(
                self._report_load(autoscaler, recorder, replica))

    async def _report_load(self, autoscaler, recorder: EngineLoadRecorder, replica: str) -> None:
        while True:
            await asyncio.sleep(LOAD_REPORT_PERIOD_S)
            sample = recorder.drain()
            try:
                await autoscaler.report_engine.remote(self.name, replica, sample.to_dict())
            except Exception as exc:  # the controller restarts; serving goes on meanwhile
                logger.warning("autoscaler unreachable: %r", exc)

    async def card(self) -> dict[str, Any]:
        return self.host.card()

    async def load(self) -> dict[str, float]:
        return {**self.host.load(), "link_requests": float(self._links.in_flight)}

    async def check_health(self) -> None:
        # Ray Serve calls this periodically; a dead engine core makes the replica unhealthy
        # and Serve replaces it.
        await asyncio.wait_for(self.host.check_health(), 10)

    async def __del__(self) -> None:
        """Serve's graceful shutdown (scale-down, deletion, redeploy): no new links, the
        gateways told to send elsewhere, requests in flight finished, then the engine stops."""
        start = getattr(self, "_start", None)
        if start is not None:
            await start.withdraw()
        links = getattr(self, "_links", None)
        if links is not None:
            await self._publisher.withdraw()
            if not await links.drain(LINK_DRAIN_S):
                logger.warning("%d requests still in flight after %d s of draining",
                               links.in_flight, LINK_DRAIN_S)
            links.close()
        host = getattr(self, "host", None)
        if host is not None:
            host.shutdown()


def engine_deployment_options(endpoint: EndpointConfig,
                              partition: PartitionConfig) -> dict[str, Any]:
    """Ray Serve options of an endpoint's engine deployment. Its requests come over links,
    bounded by the gateway (max_in_flight), so Serve's own request limits only count the
    few calls it still carries (card, load)."""
    return {
        "name": engine_deployment_name(endpoint.name),
        "num_replicas": endpoint.replicas,
        "max_ongoing_requests": endpoint.max_ongoing_requests,
        "max_queued_requests": endpoint.max_in_flight,
        "health_check_period_s": ENGINE_HEALTH_CHECK_PERIOD_S,
        "health_check_timeout_s": ENGINE_HEALTH_CHECK_TIMEOUT_S,
        "graceful_shutdown_timeout_s": ENGINE_GRACEFUL_SHUTDOWN_S,
        **engine_resources(endpoint, partition),
    }


def engine_resources(endpoint: EndpointConfig, partition: PartitionConfig) -> dict[str, Any]:
    """Ray resources for one engine replica.

    On the CPU the partition's slots are Ray logical CPUs. On GPU nodes a replica asks for its
    share of GPUs (fractions put several small models on one GPU); with tensor parallelism
    vLLM's Ray executor needs one GPU bundle per rank, packed on one node."""
    per_replica = endpoint.accelerators_per_replica
    if partition.accelerator == "cpu":
        options = {"ray_actor_options": {"num_cpus": per_replica}}
    elif endpoint.engine.tensor_parallel_size == 1:
        options = {"ray_actor_options": {"num_cpus": 1, "num_gpus": per_replica}}
    else:
        options = {
            "ray_actor_options": {"num_cpus": 1},
            "placement_group_bundles": [{"CPU": 1}] + [
                {"GPU": 1} for _ in range(endpoint.engine.tensor_parallel_size)],
            "placement_group_strategy": "STRICT_PACK",
        }
    return with_custom_resources(options, endpoint.resources)


def with_custom_resources(options: dict[str, Any], resources: dict[str, float]) -> dict[str, Any]:
    """Adds Ray custom resources to a replica's options. With a placement group the replica
    actor runs in the first bundle, which must then hold them too (and, packed, pins the
    group to a node that has them)."""
    if not resources:
        return options
    actor = options.get("ray_actor_options", {})
    merged = {**actor.get("resources", {})}
    for name, amount in resources.items():
        merged[name] = merged.get(name, 0) + amount
    options = {**options, "ray_actor_options": {**actor, "resources": merged}}
    if "placement_group_bundles" in options:
        first, *rest = options["placement_group_bundles"]
        options["placement_group_bundles"] = [{**first, **merged}, *rest]
    return options


def engine_args(endpoint: EndpointConfig, partition: PartitionConfig) -> dict[str, Any]:
    engine = endpoint.engine.model_dump(exclude={"extra_args"}, exclude_none=True)
    engine.update(endpoint.engine.extra_args)
    # vLLM's priority scheduler, so that an engine schedules interactive requests before the
    # batch lines sent to it (the gateway sets each request's priority; a client cannot).
    # Under "fcfs" (an operator's choice in extra_args) priorities are ignored.
    engine.setdefault("scheduling_policy", "priority")
    if partition.accelerator == "gpu" and endpoint.engine.tensor_parallel_size > 1:
        engine.setdefault("distributed_executor_backend", "ray")
    return engine
