"""Endpoints created through the admin API: checked against the platform (fields, model,
room in the partition), deployed, and removed again (Serve drains their replicas: requests in
flight finish, up to the graceful-shutdown time).

All of them are engine deployments of one Ray Serve application, `aifactory-endpoints`,
redeployed with the store's set on each change: Serve adds and removes deployments and
leaves the unchanged ones running. It runs with Serve's external scaler: an endpoint created
with `autoscaling` is sized by the partition controller like one of the config, which reads
the store's set itself. A redeploy leaves the controller's targets alone: Serve resets a
deployment's replicas only when its config or version changes (DeploymentState.deploy in
Ray 2.60 returns early otherwise), and neither carries the autoscaling block, so a change
of it restarts nothing. One application because with direct ingress every
application's ingress takes an HTTP port of the gateway's pinned range; this one's ingress
is a small stand-in that takes the one spare port.

The checks are pure functions; `ServeEndpointDeployer` is the I/O edge, one per gateway
replica. Every gateway replica follows the store, so an endpoint created through one is
routed by all within a few seconds."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from deployments.config import (
    DEMO_MODEL,
    EndpointAutoscalingConfig,
    EndpointConfig,
    PartitionConfig,
)
from deployments.engine import engine_args, engine_deployment_name, engine_deployment_options
from deployments.partition import check_autoscaling, check_fits, check_start
from serving.admin.catalogue_models import host_memory
from serving.catalogue import model_store
from serving.catalogue.model_record import CATALOGUE_PREFIX
from serving.catalogue.placement import catalogue_deployment
from serving.engine.card import card_from_args
from serving.targets.deployment import DeploymentTarget, LinkHub
from serving.targets.registry import EndpointTargets
from serving.tenancy import Conflict, Invalid, NotFound, Store

logger = logging.getLogger(__name__)

APP_NAME = "aifactory-endpoints"
# What an admin-created endpoint may set: a config file endpoint's deployment fields, not
# colocation (the gateway's replicas are fixed).
DEPLOYMENT_FIELDS = frozenset({"model", "replicas", "accelerators_per_replica",
                               "max_ongoing_requests", "max_queued_requests", "resources",
                               "engine", "autoscaling"})
FOLLOW_PERIOD_S = 2.0
# How long a create waits for Serve to know the new engine deployment.
DEPLOYMENT_VISIBLE_S = 60.0
# The catalogue entry a deployment's model folder was resolved from (`model:
# catalogue:NAME`); set by check, never by the caller; it keeps the entry from being deleted.
CATALOGUE_FIELD = "catalogue"
# One GPU's memory when the partition does not say: an 80 GB A100/H100.
GPU_MEMORY_ASSUMED = 80 * 1024**3


class CreatedEndpoints:
    """The application's ingress, binding the engines into it. Nobody calls it; the gateway
    calls each engine deployment directly."""

    def __init__(self, engines: dict[str, Any]) -> None:
        pass


def parse_deployment(name: str, deployment: dict[str, Any]) -> EndpointConfig:
    """The deployment as the config file's schema reads it; Invalid naming the field."""
    unknown = sorted(set(deployment) - DEPLOYMENT_FIELDS - {CATALOGUE_FIELD})
    if unknown:
        raise Invalid("deployment", f"unknown field(s) {', '.join(unknown)}; allowed: "
                                    f"{', '.join(sorted(DEPLOYMENT_FIELDS))}")
    try:
        if deployment.get("autoscaling") is not None:
            # Strictly: over the API `true` is no replica count, nor "2" one (a config
            # file's YAML has no such doubt).
            EndpointAutoscalingConfig.model_validate(deployment["autoscaling"], strict=True)
        endpoint = EndpointConfig(name=name, **{k: v for k, v in deployment.items()
                                               if k != CATALOGUE_FIELD})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        if exc.title == EndpointAutoscalingConfig.__name__:
            where = f"autoscaling.{where}" if where else "autoscaling"
        raise Invalid(f"deployment.{where}", first["msg"]) from None
    if endpoint.replicas < 1 and endpoint.autoscaling is None:
        raise Invalid("deployment.replicas", "an endpoint created here runs at least one replica")
    if endpoint.engine.max_model_len is None:
        # The gateway admits requests against it before the engine is there to ask.
        raise Invalid("deployment.engine.max_model_len", "required for an endpoint created "
                                                         "through the admin API")
    check_autoscaling(endpoint, "deployment.autoscaling")
    return endpoint


def with_autoscaling(name: str, deployment: dict[str, Any] | None,
                     changes: dict[str, Any]) -> dict[str, Any]:
    """A created endpoint's stored deployment with its autoscaling block changed: a field
    given replaces it (`slo` field by field), one left out keeps its value. Conflict for an
    endpoint that has no block to change."""
    if deployment is None:
        raise Conflict(f"autoscaling: endpoint {name!r} was not deployed through the admin "
                       "API; an endpoint of the platform config is sized in its config")
    current = deployment.get("autoscaling")
    if current is None:
        # Its engines were started without reporting to the controller.
        raise Conflict(f"autoscaling: endpoint {name!r} runs a fixed replica count; delete "
                       "it and create it again with autoscaling")
    merged = {**current, **changes}
    if isinstance(changes.get("slo"), dict):
        merged["slo"] = {**(current.get("slo") or {}), **changes["slo"]}
    return {**deployment, "autoscaling": merged}


def partition_device_bytes(partition: PartitionConfig, host_bytes: int) -> dict[str, int]:
    """One device of the partition's kind, as catalogue sizing sees it: on the CPU a slot's
    share of the host's memory (e.g. 64 GiB over 8 slots: 8 GiB), a GPU as the config says
    (`device_memory_bytes`, if the partition has it) or GPU_MEMORY_ASSUMED."""
    if partition.accelerator == "cpu":
        return {"cpu": int(host_bytes / partition.count)}
    return {"gpu": getattr(partition, "device_memory_bytes", None) or GPU_MEMORY_ASSUMED}


@dataclass(frozen=True)
class DeployerSettings:
    """What a gateway replica needs to deploy endpoints: the partition and the endpoints of
    the config (which hold their share of it), and where built-in models are."""

    partition: dict[str, Any]
    configured: list[dict[str, Any]]
    builtin_models: dict[str, str]
    link_secret: str


class ServeEndpointDeployer:
    """Deploys, removes and routes the endpoints created through the admin API."""

    def __init__(self, settings: DeployerSettings, store: Store,
                 targets: EndpointTargets, links: LinkHub, *, autoscaler=None,
                 waker=None) -> None:
        """`autoscaler`: the partition controller's handle, which the engines of an
        autoscaled endpoint report their load to; `waker`: the gateway replica's
        EndpointWaker, which holds requests for an autoscaled endpoint at zero."""
        self._autoscaler = autoscaler
        self._waker = waker
        self._routed: dict[str, dict[str, Any]] = {}  # the deployment each route was made of
        self._link_secret = settings.link_secret
        self._links = links
        self._partition = PartitionConfig(**settings.partition)
        self._configured = [EndpointConfig(**e) for e in settings.configured]
        self._builtin = settings.builtin_models
        self._store = store
        self._targets = targets
        self._following: asyncio.Task | None = None

    def _model_path(self, endpoint: EndpointConfig) -> str:
        if endpoint.model == DEMO_MODEL and DEMO_MODEL in self._builtin:
            return self._builtin[DEMO_MODEL]
        folder = Path(endpoint.model).expanduser()
        if not (folder / "config.json").is_file():
            raise Invalid("deployment.model", f"{endpoint.model} is not a model folder (no "
                                              "config.json) on the gateway's node")
        return str(folder.resolve())

    def accelerator_memory(self) -> dict[str, int]:
        return partition_device_bytes(self._partition, host_memory()["cpu"])

    async def check(self, name: str, deployment: dict[str, Any]) -> dict[str, Any]:
        if CATALOGUE_FIELD in deployment:
            raise Invalid(f"deployment.{CATALOGUE_FIELD}", "is set by the platform: name the "
                                                           "model as catalogue:NAME")
        deployment = await self._from_catalogue(deployment)
        endpoint = parse_deployment(name, deployment)
        check_start(endpoint, "deployment.autoscaling")
        self._model_path(endpoint)
        created = await self._created_in_store(leaving_out=name)
        check_fits(self._partition, [*self._configured, *created], endpoint)
        return _stored(endpoint, deployment)

    async def check_autoscaling(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """The stored deployment of created endpoint `name` with its autoscaling block
        changed, checked as a new one would be (its guarantee against the others')."""
        stored = await asyncio.to_thread(self._store.get_endpoint, name)
        deployment = with_autoscaling(name, stored.deployment, changes)
        try:
            endpoint = parse_deployment(name, deployment)
        except Invalid as exc:  # named as the caller sent it: autoscaling.max_replicas
            raise Invalid(exc.field.removeprefix("deployment."),
                          str(exc).split(": ", 1)[1]) from None
        created = await self._created_in_store(leaving_out=name)
        check_fits(self._partition, [*self._configured, *created], endpoint, "autoscaling")
        return _stored(endpoint, deployment)

    async def update(self, name: str, deployment: dict[str, Any]) -> None:
        """Called once `name`'s new deployment is in the store: nothing restarts (the
        controller reads the block from the store); this replica routes by the new bounds."""
        await self._route(parse_deployment(name, deployment), deployment)

    async def _from_catalogue(self, deployment: dict[str, Any]) -> dict[str, Any]:
        """A `catalogue:NAME` model resolved to the entry's folder and placed as the
        catalogue proposes, where the caller did not say (placement.catalogue_deployment)."""
        model = deployment.get("model")
        if not (isinstance(model, str) and model.startswith(CATALOGUE_PREFIX)):
            return deployment
        try:
            entry = await asyncio.to_thread(model_store.get, self._store,
                                            model.removeprefix(CATALOGUE_PREFIX))
        except (NotFound, Invalid) as exc:
            raise Invalid("deployment.model", f"{model[:80]!r}: {exc}") from None
        return catalogue_deployment(entry, deployment, self._partition.accelerator,
                                    self.accelerator_memory())

    async def deploy(self, name: str, deployment: dict[str, Any]) -> None:
        """Called once `name` is in the store: deploys the store's set of created endpoints."""
        logger.info("deploying endpoint %s: %s", name, deployment)
        await self._deploy_created()
        try:
            endpoint = parse_deployment(name, deployment)
            # serve.run returns once the application's ingress exists: at once when it ran
            # already (a second created endpoint), before Serve has the new deployment.
            deadline = asyncio.get_running_loop().time() + DEPLOYMENT_VISIBLE_S
            while True:
                try:
                    await self._route(endpoint, deployment)
                    break
                except KeyError:  # "Deployment(...) does not exist" yet
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.5)
        except BaseException:
            await self._deploy_created(leaving_out=name)
            raise

    async def remove(self, name: str) -> None:
        """Called once `name` is gone from the store: Serve drains and deletes its engines."""
        self._targets.remove(name)
        self._routed.pop(name, None)
        self._links.forget(APP_NAME, engine_deployment_name(name))
        await self._deploy_created(leaving_out=name)
        logger.info("endpoint %s removed; its replicas drain", name)

    async def _deploy_created(self, leaving_out: str | None = None) -> None:
        from ray import serve

        created = await self._created_in_store(leaving_out)
        if not created:
            await asyncio.to_thread(serve.delete, APP_NAME, _blocking=False)
            return
        ingress = serve.deployment(CreatedEndpoints).options(
            name="created-endpoints", num_replicas=1, ray_actor_options={"num_cpus": 0})
        app = _versioned(ingress, "1").bind({e.name: self._engine(e) for e in created})
        # Returns once Serve has the deployments; engines start meanwhile, and requests for
        # them wait in the gateway until a replica links up.
        await asyncio.to_thread(
            serve.run_many, [serve.RunTarget(app, name=APP_NAME, route_prefix=None,
                                             external_scaler_enabled=True)],
            wait_for_ingress_deployment_creation=True, wait_for_applications_running=False)

    async def _created_in_store(self, leaving_out: str | None) -> list[EndpointConfig]:
        endpoints = await asyncio.to_thread(self._store.list_endpoints)
        return [parse_deployment(e.name, e.deployment) for e in endpoints
                if e.deployment is not None and e.name != leaving_out]

    def follow(self) -> None:
        """Route what other gateway replicas created or removed: the store says."""
        if self._following is None:
            self._following = asyncio.get_running_loop().create_task(self._follow_forever())

    async def _follow_forever(self) -> None:
        while True:
            try:
                endpoints = await asyncio.to_thread(self._store.list_endpoints)
                created = {e.name: e.deployment for e in endpoints if e.deployment is not None}
                for name in self._targets.created() - created.keys():
                    self._targets.remove(name)
                    self._routed.pop(name, None)
                    self._links.forget(APP_NAME, engine_deployment_name(name))
                for name, deployment in created.items():
                    # New, or changed through another replica (its autoscaling block).
                    if name not in self._targets or self._routed.get(name) != deployment:
                        await self._route(parse_deployment(name, deployment), deployment)
            except Exception as exc:  # the store is away: keep routing what is known
                logger.warning("cannot follow created endpoints: %r", exc)
            await asyncio.sleep(FOLLOW_PERIOD_S)

    async def _route(self, endpoint: EndpointConfig, deployment: dict[str, Any]) -> None:
        from ray import serve

        # Asks the Serve controller (a blocking call) whether the deployment exists yet: a
        # row another replica just wrote may be ahead of its application (the next round
        # of following catches up).
        handle = await asyncio.to_thread(
            serve.get_deployment_handle, engine_deployment_name(endpoint.name), APP_NAME)
        card = card_from_args(self._model_path(endpoint), engine_args(endpoint, self._partition))
        links = self._links.links_for(APP_NAME, engine_deployment_name(endpoint.name),
                                      endpoint.name)
        # An autoscaled endpoint may be at zero: requests for it are held while it wakes.
        waker = self._waker if endpoint.autoscaling is not None else None
        self._targets.add(endpoint.name, DeploymentTarget(
            endpoint.name, links, handle, endpoint.max_in_flight, endpoint.slots,
            endpoint.max_ongoing_requests, waker=waker, card=card))
        self._routed[endpoint.name] = deployment

    def _engine(self, endpoint: EndpointConfig):
        from ray import serve

        from deployments.engine import EngineDeployment

        # Neither the options nor the version carry the autoscaling block, so changing it
        # leaves Serve's deployment as it was: no restart, no reset of the controller's
        # target. (An endpoint without one hashes as it did before blocks existed.)
        unscaled = endpoint.model_copy(update={"autoscaling": None})
        options = engine_deployment_options(unscaled, self._partition)
        args = (endpoint.name, self._model_path(endpoint), engine_args(endpoint, self._partition),
                self._link_secret)
        # The secret stays out of the version: it is the same for every engine.
        version = hashlib.sha256(json.dumps([args[:3], unscaled.model_dump(mode="json")],
                                            sort_keys=True, default=str).encode()).hexdigest()
        # Serve takes no deployment of 0 replicas (options() refuses it; one forced in
        # breaks serve.status): an autoscaled endpoint created at zero is deployed with one,
        # which the controller takes back at its first decision (PartitionView.deployed).
        deployment = serve.deployment(EngineDeployment).options(
            **{**options, "num_replicas": max(options["num_replicas"], 1)})
        autoscaler = self._autoscaler if endpoint.autoscaling is not None else None
        return _versioned(deployment, version[:16]).bind(*args, autoscaler)


def _stored(endpoint: EndpointConfig, deployment: dict[str, Any]) -> dict[str, Any]:
    """What the store keeps of a checked deployment: every field as it runs (defaults
    filled in), and the catalogue entry it came from."""
    stored = endpoint.model_dump(mode="json", include=set(DEPLOYMENT_FIELDS),
                                 exclude=set() if endpoint.autoscaling else {"autoscaling"})
    if CATALOGUE_FIELD in deployment:
        stored[CATALOGUE_FIELD] = deployment[CATALOGUE_FIELD]
    return stored


def _versioned(deployment, version: str):
    """Serve restarts a deployment's replicas when its version changes, and a serve.run
    call gives every deployment a random one unless set: set from what defines it, so that
    redeploying the set leaves the running engines alone. (Serve has no public option for
    it since `options(version=)` was removed.)"""
    deployment._version = version
    return deployment
