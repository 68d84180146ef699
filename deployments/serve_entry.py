"""The platform as a Ray Serve application builder, for deployers that take an import path
instead of running `aifactory up`: KubeRay's RayService (`serveConfigV2`), `serve deploy`,
`serve run deployments.serve_entry:app config=platform.yaml`.

It does what `aifactory up` does before `serve.run` (resolve the models, check the engine
arguments, migrate the store and apply the config's tenants and endpoints) and returns the
application; it neither starts nor joins Ray. Whoever runs it sets, on every Ray node, the
environment `aifactory up` would (`deployments.cli.ray_env`), and `external_scaler_enabled`
when an endpoint is autoscaled (`deployments.app.needs_external_scaler`)."""

from __future__ import annotations

import os

from ray import serve

from deployments.config import default_config, load_config

# The platform config file, unless the builder's `config` argument names one.
CONFIG_ENV = "AIFACTORY_CONFIG"


def app(args: dict[str, str] | None = None) -> serve.Application:
    """Serve calls this with the application's `args` from its config file."""
    from deployments.app import build_app
    from deployments.cli import check_engine_args, prepare_tenancy, resolve_models

    path = (args or {}).get("config") or os.environ.get(CONFIG_ENV)
    config = load_config(path) if path else default_config()
    paths = resolve_models(config)
    check_engine_args(config, paths)
    tenancy, _ = prepare_tenancy(config, using_default=not path)
    from deployments.home import link_secret

    return build_app(config, paths, tenancy, link_secret())
