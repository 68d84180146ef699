"""The controller's hands on Ray Serve: how many replicas of each engine deployment are
running, and setting a deployment's target replica count.

Scaling uses Serve's external-scaler API (Ray 2.60, alpha): the application is deployed with
`external_scaler_enabled=True` and each target goes to the Serve controller's
`update_deployment_replicas`, the call Ray's own dashboard makes for
`POST /api/v1/applications/{app}/deployments/{deployment}/scale`. The dashboard is not
always running (the platform starts Ray without it), so the controller calls it directly.
The endpoints of the config run in the platform's application, those created through the
admin API in theirs: both are run with the external scaler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping


class ServeControl:
    """`deployments` maps endpoint name -> (Serve application, deployment name); the
    controller replaces it when the partition's endpoints change."""

    def __init__(self, deployments: Mapping[str, tuple[str, str]]) -> None:
        self.deployments = dict(deployments)
        self._controller = None

    def _serve_controller(self):
        if self._controller is None:
            import ray
            from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

            self._controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        return self._controller

    async def running_replicas(self) -> dict[str, int]:
        """Running replicas per endpoint; an endpoint Serve does not report is left out
        (unknown, not zero)."""
        from ray import serve
        from ray.serve._private.common import ReplicaState

        status = await asyncio.to_thread(serve.status)
        running = {}
        for endpoint, (app_name, deployment) in self.deployments.items():
            app = status.applications.get(app_name)
            overview = None if app is None else app.deployments.get(deployment)
            if overview is not None:
                running[endpoint] = int(overview.replica_states.get(ReplicaState.RUNNING, 0))
        return running

    async def scale(self, endpoint: str, replicas: int) -> None:
        from ray.serve._private.common import DeploymentID

        app_name, deployment = self.deployments[endpoint]
        await self._serve_controller().update_deployment_replicas.remote(
            DeploymentID(name=deployment, app_name=app_name), replicas)
