"""Builds the platform's Ray Serve application from its config.

The gateway deployment is the ingress. Each endpoint's engines run either in their own engine
deployment, reached by handle, or, for the one endpoint marked `colocated`, inside the gateway
replicas themselves: then a streamed token crosses no process boundary between the engine and
the client's socket, which on a small node is most of the serving overhead (see
benchmarks/overhead.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.config import EndpointConfig, PartitionConfig, PlatformConfig
from deployments.engine import EngineDeployment
from deployments.targets import HandleTarget
from serving.admin import build_admin_router
from serving.engine import EngineHost
from serving.engine.local import LocalTarget
from serving.gateway import EndpointTarget, build_gateway_app
from serving.gateway.access import Access
from serving.tenancy import LocalAdmissionCounters, Store

APP_NAME = "aifactory"
GATEWAY = "gateway"

# Engines take minutes to load weights on a GPU node; Serve must not give up on them earlier.
ENGINE_HEALTH_CHECK_PERIOD_S = 10
ENGINE_HEALTH_CHECK_TIMEOUT_S = 30
ENGINE_GRACEFUL_SHUTDOWN_S = 20


def engine_deployment_name(endpoint: str) -> str:
    return f"engine-{endpoint}"


@serve.ingress()
class GatewayDeployment:
    """The ingress: FastAPI routes of `serving.gateway`, endpoints reached by handle."""

    async def __init__(
        self,
        engines: dict[str, DeploymentHandle],
        tenancy: TenancySettings,
        colocated: tuple[str, str, dict[str, Any]] | None = None,
    ) -> None:
        self._access = tenancy.connect()
        self._targets: dict[str, EndpointTarget] = {
            name: HandleTarget(name, handle) for name, handle in engines.items()
        }
        self._host: EngineHost | None = None
        if colocated is not None:
            name, model_path, args = colocated
            self._host = await EngineHost.start(model_path, name, args)
            self._targets[name] = LocalTarget(name, self._host)

    def __serve_build_asgi_app__(self):
        admin = build_admin_router(self._access.store)
        replica = serve.get_replica_context().replica_id.unique_id
        return build_gateway_app(self._targets, self._access, routers=(("/admin/v1", admin),),
                                 replica=replica)

    async def check_health(self) -> None:
        if self._host is not None:
            await self._host.check_health()

    async def load(self) -> dict[str, float]:
        return self._host.load() if self._host is not None else {}

    def __del__(self) -> None:
        if self._host is not None:
            self._host.shutdown()


def engine_resources(endpoint: EndpointConfig, partition: PartitionConfig) -> dict[str, Any]:
    """Ray resources for one engine replica.

    On the CPU the partition's slots are Ray logical CPUs. On GPU nodes a replica asks for its
    share of GPUs (fractions put several small models on one GPU); with tensor parallelism
    vLLM's Ray executor needs one GPU bundle per rank, packed on one node."""
    per_replica = endpoint.accelerators_per_replica
    if partition.accelerator == "cpu":
        return {"ray_actor_options": {"num_cpus": per_replica}}
    tp = endpoint.engine.tensor_parallel_size
    if tp == 1:
        return {"ray_actor_options": {"num_cpus": 1, "num_gpus": per_replica}}
    return {
        "ray_actor_options": {"num_cpus": 1},
        "placement_group_bundles": [{"CPU": 1}] + [{"GPU": 1} for _ in range(tp)],
        "placement_group_strategy": "STRICT_PACK",
    }


def engine_args(endpoint: EndpointConfig, partition: PartitionConfig) -> dict[str, Any]:
    engine = endpoint.engine.model_dump(exclude={"extra_args"}, exclude_none=True)
    engine.update(endpoint.engine.extra_args)
    if partition.accelerator == "gpu" and endpoint.engine.tensor_parallel_size > 1:
        engine.setdefault("distributed_executor_backend", "ray")
    return engine


@dataclass(frozen=True)
class TenancySettings:
    """Where a gateway replica finds the tenancy store and the shared admission counters.
    Without Redis the counters live in the replica: right for one gateway replica only."""

    database_url: str
    redis_url: str | None = None
    redis_prefix: str = "aifactory:admission"

    def connect(self) -> Access:
        store = Store(self.database_url)
        if self.redis_url is None:
            return Access(store, LocalAdmissionCounters())
        import redis.asyncio as redis

        from serving.tenancy.redis_counters import RedisAdmissionCounters

        # A blocking pool queues at its limit instead of failing requests under bursts.
        client = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
            self.redis_url, max_connections=256, timeout=5))
        return Access(store, RedisAdmissionCounters(client, prefix=self.redis_prefix))


def build_app(config: PlatformConfig, model_paths: dict[str, str],
              tenancy: TenancySettings) -> serve.Application:
    """`model_paths` maps endpoint name to a local model folder (the demo model resolved)."""
    engines = {}
    colocated = None
    gateway_options: dict[str, Any] = {
        "num_replicas": config.server.gateway_replicas, "ray_actor_options": {"num_cpus": 0}}
    for endpoint in config.endpoints:
        if endpoint.colocated:
            colocated = (
                endpoint.name, model_paths[endpoint.name], engine_args(endpoint, config.partition)
            )
            gateway_options = {
                "num_replicas": endpoint.replicas,
                "health_check_period_s": ENGINE_HEALTH_CHECK_PERIOD_S,
                "health_check_timeout_s": ENGINE_HEALTH_CHECK_TIMEOUT_S,
                "graceful_shutdown_timeout_s": ENGINE_GRACEFUL_SHUTDOWN_S,
                **engine_resources(endpoint, config.partition),
            }
            continue
        deployment = serve.deployment(EngineDeployment).options(
            name=engine_deployment_name(endpoint.name),
            num_replicas=endpoint.replicas,
            max_ongoing_requests=endpoint.max_ongoing_requests,
            health_check_period_s=ENGINE_HEALTH_CHECK_PERIOD_S,
            health_check_timeout_s=ENGINE_HEALTH_CHECK_TIMEOUT_S,
            graceful_shutdown_timeout_s=ENGINE_GRACEFUL_SHUTDOWN_S,
            **engine_resources(endpoint, config.partition),
        )
        engines[endpoint.name] = deployment.bind(
            endpoint.name, model_paths[endpoint.name], engine_args(endpoint, config.partition)
        )
    gateway = serve.deployment(GatewayDeployment).options(
        name=GATEWAY,
        # Admission, not Serve's queue, bounds what reaches an engine; vLLM batches the rest.
        max_ongoing_requests=4096,
        **gateway_options,
    )
    return gateway.bind(engines, tenancy, colocated)
