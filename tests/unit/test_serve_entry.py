"""deployments/serve_entry.py:app, the builder KubeRay's serveConfigV2 (or `serve run`) names:
through Ray Serve's own builder call it prepares the store and returns the platform's
application, without starting or joining Ray."""

from __future__ import annotations

import pytest
import ray
import yaml
from ray import serve
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

from deployments.serve_entry import CONFIG_ENV, app
from serving.tenancy import Store

CONFIG = {
    "server": {"resources": {"gateway_node": 1}},
    "tenants": [{"name": "acme"}],
    "endpoints": [{"name": "chat", "owner": "acme", "model": None,
                   "resources": {"engine_node": 1}, "engine": {"max_model_len": 512}}],
}


@pytest.fixture
def platform_files(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # a model folder as far as the config cares
    config = tmp_path / "platform.yaml"
    endpoint = {**CONFIG["endpoints"][0], "model": str(model)}
    config.write_text(yaml.safe_dump({**CONFIG, "endpoints": [endpoint]}))
    database = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("AIFACTORY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIFACTORY_DATABASE_URL", database)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.delenv("AIFACTORY_ADMIN_KEY", raising=False)
    return {"config": str(config), "database": database}


@pytest.mark.parametrize("config_from", ["args", "environment"])
def test_builder_returns_the_application_and_prepares_the_store(
        platform_files, monkeypatch, config_from):
    args = {"config": platform_files["config"]} if config_from == "args" else {}
    if config_from == "environment":
        monkeypatch.setenv(CONFIG_ENV, platform_files["config"])
    built = call_user_app_builder_with_args_if_necessary(app, args)
    assert isinstance(built, serve.Application)
    assert not ray.is_initialized()
    store = Store(platform_files["database"])
    try:
        assert [t.name for t in store.list_tenants()] == ["acme"]
        assert [(e.name, e.owner) for e in store.list_endpoints()] == [("chat", "acme")]
    finally:
        store.close()
