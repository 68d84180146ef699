"""Builds the platform's Ray Serve application from its config.

The gateway deployment is the ingress. Each endpoint's engines run either in their own engine
deployment, reached by handle, or, for the one endpoint marked `colocated`, inside the gateway
replicas themselves: then a streamed token crosses no process boundary between the engine and
the client's socket, which on a small node is most of the serving overhead (see
benchmarks/overhead.py).

The partition controller runs whenever the platform does (one replica, no CPU): the
endpoints created through the admin API may be autoscaled even when the config autoscales
none. It reads the partition from the store before each decision."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.admin_endpoints import APP_NAME as CREATED_APP
from deployments.admin_endpoints import DeployerSettings, ServeEndpointDeployer
from deployments.config import PlatformConfig
from deployments.engine import (
    ENGINE_GRACEFUL_SHUTDOWN_S,
    ENGINE_HEALTH_CHECK_PERIOD_S,
    ENGINE_HEALTH_CHECK_TIMEOUT_S,
    EngineDeployment,
    engine_args,
    engine_deployment_name,
    engine_deployment_options,
    engine_resources,
    with_custom_resources,
)
from deployments.home import home
from deployments.replica_logging import log_to_serve_replica_log
from serving.admin import build_admin_router, build_tenant_router
from serving.admin.autoscaler import build_autoscaler_router
from serving.batch.files.routes import build_files_router
from serving.batch.files.rules import FileLimits
from serving.batch.files.service import Files
from serving.batch.files.storage import FileStorage
from serving.batch.routes import batch_api
from serving.engine import EngineHost
from serving.engine.card import card_from_args
from serving.engine.start_phases import Phase
from serving.engine.start_progress import StartProgress, record_start
from serving.gateway import build_gateway_app
from serving.gateway.access import Access
from serving.gateway.ledger_writer import LedgerSpool
from serving.gateway.shape import RequestLimits
from serving.targets import EndpointTarget
from serving.targets.deployment import DeploymentTarget, LinkHub
from serving.targets.local import LocalTarget
from serving.targets.registry import EndpointTargets
from serving.targets.waker import EndpointWaker
from serving.tenancy import LocalAdmissionCounters, Store

APP_NAME = "aifactory"
GATEWAY = "gateway"
AUTOSCALER = "autoscaler"

@serve.ingress()
class GatewayDeployment:
    """The ingress: FastAPI routes of `serving.gateway`, endpoints reached by handle."""

    async def __init__(
        self,
        engines: dict[str, DeploymentHandle],
        tenancy: TenancySettings,
        settings: GatewaySettings,
        colocated: tuple[str, str, dict[str, Any], tuple[int, int]] | None = None,
        autoscaling: AutoscalingWiring | None = None,
        autoscaler: DeploymentHandle | None = None,
        deployer: DeployerSettings | None = None,
        bounds: dict[str, tuple[int, int, int]] | None = None,
    ) -> None:
        """`bounds`: per endpoint, its (max_in_flight, slots, max_ongoing_requests), as
        EndpointConfig counts them; `colocated` ends with the colocated endpoint's."""
        log_to_serve_replica_log()
        self._access = tenancy.connect()
        storage = FileStorage(settings.files_dir)
        storage.sweep_uploads()  # what a replica that died mid-upload left
        self._files = Files(self._access.store, storage, settings.file_limits)
        # Records an earlier replica on this node spooled while the store was away.
        self._access.ledger.start_replay()
        self._autoscaling = autoscaling
        waker = None
        if autoscaler is not None and autoscaling is not None:
            gateway = serve.get_replica_context().replica_id.unique_id
            waker = EndpointWaker(autoscaler, gateway, autoscaling.wake_timeout_s)
        scaled = autoscaling.cards if autoscaling is not None else {}
        bounds = bounds or {}
        self._settings = settings
        self._links = LinkHub(bytes.fromhex(settings.link_secret))
        configured: dict[str, EndpointTarget] = {}
        for name, handle in engines.items():
            links = self._links.links_for(APP_NAME, engine_deployment_name(name), name)
            configured[name] = DeploymentTarget(
                name, links, handle, *bounds.get(name, (None, None, None)),
                waker=waker if name in scaled else None, card=scaled.get(name))
        self._host: EngineHost | None = None
        if colocated is not None:
            name, model_path, args, (max_in_flight, slots) = colocated
            context = serve.get_replica_context()
            start = StartProgress(context.app_name, context.deployment,
                                  context.replica_id.unique_id, name)
            start.mark(Phase.ENGINE_PROCESS)
            start.start()
            self._host = await EngineHost.start(model_path, name, args)
            record_start(name, await start.ready())
            configured[name] = LocalTarget(name, self._host, max_in_flight, slots)
        self._targets = EndpointTargets(configured)
        self._deployer = None
        if deployer is not None:
            self._deployer = ServeEndpointDeployer(deployer, self._access.store, self._targets,
                                                   self._links, autoscaler=autoscaler,
                                                   waker=waker)
            self._deployer.follow()

    def __serve_build_asgi_app__(self):
        admin = build_admin_router(self._access.store, deployer=self._deployer,
                                   endpoint_card=self._endpoint_card)
        tenant = build_tenant_router(self._access.store, endpoint_card=self._endpoint_card,
                                     adapter_root=self._settings.tenant_adapter_root)
        autoscaler = build_autoscaler_router(
            self._access.store,
            None if self._autoscaling is None else self._autoscaling.read_view)
        replica = serve.get_replica_context().replica_id.unique_id
        return build_gateway_app(
            self._targets, self._access,
            routers=(("/admin/v1", admin), ("/admin/v1", autoscaler), ("/tenant/v1", tenant),
                     ("", build_files_router(self._access, self._files))),
            replica=replica, limits=self._settings.limits, parts=(batch_api(self._files),))

    async def _endpoint_card(self, name: str) -> dict[str, Any] | None:
        """An endpoint's card, for the checks of an adapter registered on it."""
        target = self._targets.get(name)
        return None if target is None else await target.card()

    async def check_health(self) -> None:
        if self._host is not None:
            await self._host.check_health()

    async def load(self) -> dict[str, float]:
        return self._host.load() if self._host is not None else {}

    def __del__(self) -> None:
        if self._host is not None:
            self._host.shutdown()


@dataclass(frozen=True)
class AutoscalingWiring:
    """What a gateway replica needs to know of the autoscaled endpoints: their cards (an
    endpoint at zero has no engine to ask), how long to hold a request for one at zero, and
    where the controller keeps its decisions."""

    cards: dict[str, dict[str, Any]]
    wake_timeout_s: float
    database_url: str
    partition: str

    def read_view(self, actions: int) -> dict[str, Any]:
        from autoscaling.live.persistence import SnapshotStore

        snapshots = SnapshotStore(self.database_url)
        try:
            snapshot = snapshots.load(self.partition)
            recent = snapshots.recent_actions(self.partition, actions)
        finally:
            snapshots.close()
        if snapshot is None:
            return {"partition": self.partition, "decided_at": None, "endpoints": [],
                    "actions": recent}
        return {"partition": self.partition, "decided_at": snapshot.decided_at,
                "allocated": sum(d["target"] * d["replica_cost"] for d in snapshot.decisions),
                "controller": {"started_at": snapshot.controller_started_at,
                               "resumed_from_saved_state": snapshot.resumed},
                "endpoints": snapshot.decisions, "actions": recent}


@dataclass(frozen=True)
class GatewaySettings:
    """A gateway replica's own settings: the engine links' secret (hex), the bounds on
    each request body, the Files API's storage folder (shared by all replicas) and default
    limits per tenant, and the folder under which each tenant's own LoRA adapters lie."""

    link_secret: str
    limits: RequestLimits
    files_dir: str
    file_limits: FileLimits
    adapters_dir: str = ""

    def tenant_adapter_root(self, tenant: str) -> str:
        """A tenant registering its own adapter names a folder under its own one here: any
        other path the gateway can read (another tenant's adapter among them) is refused.
        Operators register from anywhere."""
        return str(Path(self.adapters_dir) / tenant)


@dataclass(frozen=True)
class TenancySettings:
    """Where a gateway replica finds the tenancy store and the shared admission counters.
    Without Redis the counters live in the replica: right for one gateway replica only."""

    database_url: str
    redis_url: str | None = None
    redis_prefix: str = "aifactory:admission"
    # Where a gateway replica keeps usage records while the store is unreachable (a folder
    # on the replica's node); None: such records fail their requests instead.
    ledger_spool_dir: str | None = None

    def connect(self) -> Access:
        store = Store(self.database_url)
        spool = LedgerSpool(self.ledger_spool_dir) if self.ledger_spool_dir else None
        if self.redis_url is None:
            return Access(store, LocalAdmissionCounters(), ledger_spool=spool)
        import redis.asyncio as redis

        from serving.tenancy.redis_counters import RedisAdmissionCounters

        # A blocking pool queues at its limit instead of failing requests under bursts.
        client = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
            self.redis_url, max_connections=256, timeout=5))
        return Access(store, RedisAdmissionCounters(client, prefix=self.redis_prefix),
                      ledger_spool=spool)


def build_app(config: PlatformConfig, model_paths: dict[str, str],
              tenancy: TenancySettings, link_secret: str) -> serve.Application:
    """`model_paths` maps endpoint name to a local model folder (the demo model resolved);
    `link_secret` (hex) authenticates the links between gateway and engine replicas.
    With autoscaled endpoints the application must be run with `external_scaler_enabled`
    (see `needs_external_scaler`): the partition controller then sets their replicas."""
    from autoscaling.live.controller import PartitionController
    from autoscaling.live.partition_view import DEFAULT_PARTITION
    from deployments.batch_backlog import StoreBatchBacklog
    from deployments.partition_source import StorePartition

    engines = {}
    colocated = None
    partition = config.autoscaled_partition()
    scaled = [] if partition is None else [config.endpoint(e.name) for e in partition.endpoints]
    settings = config.partition.autoscaler
    autoscaler = serve.deployment(PartitionController).options(
        name=AUTOSCALER, num_replicas=1, max_ongoing_requests=1024,
        ray_actor_options={"num_cpus": 0},
    ).bind(None if partition is None else partition.model_dump(mode="json"), APP_NAME,
           {e.name: engine_deployment_name(e.name) for e in scaled},
           {e.name: e.replicas for e in scaled},
           tenancy.database_url, settings.period_s, settings.window_s,
           config.partition.accelerator, StoreBatchBacklog(tenancy.database_url),
           StorePartition(config.partition.model_dump(mode="json"),
                          [e.model_dump(mode="json") for e in config.endpoints],
                          APP_NAME, CREATED_APP, tenancy.database_url))
    autoscaling = AutoscalingWiring(
        cards={e.name: card_from_args(model_paths[e.name], engine_args(e, config.partition))
               for e in scaled},
        wake_timeout_s=settings.wake_timeout_s,
        database_url=tenancy.database_url, partition=DEFAULT_PARTITION)
    gateway_options: dict[str, Any] = {
        "num_replicas": config.server.gateway_replicas, "ray_actor_options": {"num_cpus": 0}}
    for endpoint in config.endpoints:
        if endpoint.colocated:
            colocated = (
                endpoint.name, model_paths[endpoint.name], engine_args(endpoint, config.partition),
                (endpoint.max_in_flight, endpoint.slots),
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
            **engine_deployment_options(endpoint, config.partition))
        engines[endpoint.name] = deployment.bind(
            endpoint.name, model_paths[endpoint.name], engine_args(endpoint, config.partition),
            link_secret, autoscaler if endpoint.autoscaling is not None else None,
        )
    gateway_options = with_custom_resources(gateway_options, config.server.resources)
    gateway = serve.deployment(GatewayDeployment).options(
        name=GATEWAY,
        # Admission, not Serve's queue, bounds what reaches an engine; vLLM batches the rest.
        max_ongoing_requests=4096,
        **gateway_options,
    )
    deployer = DeployerSettings(
        partition=config.partition.model_dump(mode="json"),
        configured=[e.model_dump(mode="json") for e in config.endpoints],
        builtin_models={e.model: model_paths[e.name] for e in config.endpoints
                        if e.model.startswith("builtin:")},
        link_secret=link_secret)
    settings = GatewaySettings(link_secret, RequestLimits(
        max_prompts=config.server.max_prompts_per_request,
        max_json_depth=config.server.max_json_depth,
        response_retention_s=config.server.response_retention_days * 86400),
        files_dir=str(files_dir(config)),
        adapters_dir=str(home() / "adapters"),
        file_limits=FileLimits(**config.server.files.model_dump(exclude={"storage_dir"})))
    return gateway.bind(engines, tenancy, settings, colocated, autoscaling, autoscaler,
                        deployer,
                        {e.name: (e.max_in_flight, e.slots, e.max_ongoing_requests)
                         for e in config.endpoints if not e.colocated})


def files_dir(config: PlatformConfig) -> Path:
    """Where the Files API keeps file bytes: server.files.storage_dir, else the data home's
    `files` folder (resolved here, on the machine that builds the application)."""
    given = config.server.files.storage_dir
    return Path(given).expanduser().resolve() if given else home() / "files"


def needs_external_scaler(config: PlatformConfig) -> bool:
    return any(e.autoscaling is not None for e in config.endpoints)
