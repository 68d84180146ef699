"""The partition controller's view of the partition, read from the platform store: the
config's endpoints and those created through the admin API, merged (deployments.partition),
with where each runs on Ray Serve. Built here and handed to the controller, so that
autoscaling/ need not know the store's endpoints (nor serving/ the controller)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from autoscaling.live.partition_view import PartitionView
from deployments.config import EndpointConfig, PartitionConfig
from deployments.engine import engine_deployment_name
from deployments.partition import autoscaled_partition

logger = logging.getLogger("ray.serve")


def partition_view(partition: PartitionConfig, configured: Sequence[EndpointConfig],
                   created: Sequence[EndpointConfig], configured_app: str,
                   created_app: str) -> PartitionView:
    """The autoscaled endpoints of both kinds sharing what the fixed-size ones of both kinds
    leave, each with its Serve application and deployment, and the replicas it is deployed
    with. ValueError when they do not fit (see autoscaled_partition)."""
    scaled = [(e, configured_app) for e in configured if e.autoscaling is not None]
    scaled += [(e, created_app) for e in created if e.autoscaling is not None]
    return PartitionView(
        autoscaled_partition(partition, [*configured, *created]),
        {e.name: (app, engine_deployment_name(e.name)) for e, app in scaled},
        {e.name: e.replicas for e, _ in scaled},
        {e.name: 1 for e, _ in scaled if e.replicas == 0})  # see ServeEndpointDeployer._engine


class StorePartition:
    """Callable: the PartitionView as the store has it now, one query per call. Sent to the
    controller's actor as its settings and database URL; the store is opened there, once."""

    def __init__(self, partition: dict[str, Any], configured: list[dict[str, Any]],
                 configured_app: str, created_app: str, database_url: str) -> None:
        self.partition = partition
        self.configured = configured
        self.configured_app = configured_app
        self.created_app = created_app
        self.database_url = database_url
        self._store = None

    def __call__(self) -> PartitionView:
        from deployments.admin_endpoints import parse_deployment
        from serving.tenancy import Store, TenancyError

        if self._store is None:
            self._store = Store(self.database_url)
        created = []
        for row in self._store.list_endpoints():
            if row.deployment is None or row.name in self._names():
                continue
            try:
                created.append(parse_deployment(row.name, row.deployment))
            except TenancyError as exc:  # stored by an older platform, say: not sized here
                logger.warning("autoscaler: endpoint %s left out: %s", row.name, exc)
        return partition_view(PartitionConfig(**self.partition),
                              [EndpointConfig(**e) for e in self.configured], created,
                              self.configured_app, self.created_app)

    def _names(self) -> set[str]:
        return {e["name"] for e in self.configured}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None}
