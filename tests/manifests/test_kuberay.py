"""deployments/kuberay/rayservice.yaml: every object is valid for its schema (Kubernetes' own
for core objects, KubeRay's RayService CRD for the RayService, Ray Serve's for serveConfigV2),
and the Ray cluster it describes matches the platform config it carries."""

from __future__ import annotations

import copy
import importlib
import json
from importlib.resources import files
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema
from referencing import Registry, Resource

from deployments.app import needs_external_scaler
from deployments.cli import ray_env, serve_proxy_port
from deployments.config import parse_config

ROOT = Path(__file__).parents[2]
MANIFEST = ROOT / "deployments" / "kuberay" / "rayservice.yaml"
RAYSERVICE_SCHEMA = Path(__file__).with_name("kuberay_rayservice_v1.schema.json")
# The oldest Kubernetes release still maintained when this was written.
KUBERNETES = "1.33.0"


def _documents() -> list[dict]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def _one(kind: str) -> dict:
    [doc] = [d for d in _documents() if d["kind"] == kind]
    return doc


@pytest.fixture(scope="module")
def rayservice_validator() -> jsonschema.Draft202012Validator:
    definitions = json.loads(
        (files("kubernetes_validate") / "kubernetes-json-schema"
         / f"v{KUBERNETES}-local-strict" / "_definitions.json").read_text())
    schema = json.loads(RAYSERVICE_SCHEMA.read_text())
    registry = Registry().with_resources([
        (definitions["$id"], Resource.from_contents(definitions)),
        (schema["$id"], Resource.from_contents(schema)),
    ])
    return jsonschema.Draft202012Validator(schema, registry=registry)


def test_core_objects_are_valid_kubernetes():
    kinds = []
    for doc in _documents():
        if doc["apiVersion"] == "ray.io/v1":
            continue
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        kinds.append(doc["kind"])
    assert sorted(kinds) == ["ConfigMap", "Deployment", "NetworkPolicy",
                             "PersistentVolumeClaim", "Service", "Service", "Service",
                             "StatefulSet"]


def test_rayservice_is_valid_for_the_crd(rayservice_validator):
    rayservice_validator.validate(_one("RayService"))


@pytest.mark.parametrize("path,typo", [
    (("spec", "rayClusterConfig", "workerGroupSpecs", 0), "replica"),
    (("spec", "rayClusterConfig", "headGroupSpec", "template", "spec", "containers", 0),
     "imagePullPolicyy"),
])
def test_crd_validation_catches_an_unknown_field(rayservice_validator, path, typo):
    doc = copy.deepcopy(_one("RayService"))
    node = doc
    for step in path:
        node = node[step]
    node[typo] = 1
    with pytest.raises(jsonschema.ValidationError, match=typo):
        rayservice_validator.validate(doc)


def _platform_config():
    return parse_config(yaml.safe_load(_one("ConfigMap")["data"]["platform.yaml"]),
                        "the ConfigMap's platform.yaml")


def _serve_config() -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(yaml.safe_load(_one("RayService")["spec"]["serveConfigV2"]))


def test_serve_config_builds_the_platform_from_the_mounted_config():
    serve_config = _serve_config()
    [app] = serve_config.applications
    module, _, attr = app.import_path.partition(":")
    assert getattr(importlib.import_module(module), attr).__name__ == "app"
    config = _platform_config()
    assert serve_config.http_options.port == serve_proxy_port(config)
    assert app.external_scaler_enabled == needs_external_scaler(config)
    assert app.args == {"config": "/etc/aifactory/platform.yaml"}


def _ray_containers() -> list[dict]:
    cluster = _one("RayService")["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_every_ray_node_has_the_environment_aifactory_up_sets():
    expected = ray_env(_platform_config())
    for container in _ray_containers():
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {k: env.get(k) for k in expected} == expected, container["name"]
        assert "AIFACTORY_DATABASE_URL" in env and "AIFACTORY_REDIS_URL" in env
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/etc/aifactory", "/models"} <= mounts


def test_nodes_offer_the_resources_the_config_asks_for():
    config = _platform_config()
    cluster = _one("RayService")["spec"]["rayClusterConfig"]

    def offered(group: dict) -> dict[str, float]:
        # KubeRay passes the value to `ray start --resources` as a quoted JSON string.
        return json.loads(json.loads(group["rayStartParams"].get("resources", '"{}"')))

    assert set(config.server.resources) <= set(offered(cluster["headGroupSpec"]))
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    [gpu] = cluster["workerGroupSpecs"]
    for endpoint in config.endpoints:
        assert set(endpoint.resources) <= set(offered(gpu)), endpoint.name
    gpus = int(gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    assert config.partition.accelerator == "gpu"
    assert gpu["replicas"] * gpus == config.partition.count


def test_workers_are_ready_without_a_serve_proxy():
    # Direct ingress (server.ingress: direct) runs Serve's proxy on the head only; KubeRay's
    # default worker probe also asks that proxy, so the workers bring their own.
    assert _platform_config().server.ingress == "direct"
    cluster = _one("RayService")["spec"]["rayClusterConfig"]
    for group in cluster["workerGroupSpecs"]:
        for container in group["template"]["spec"]["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                command = " ".join(container[probe]["exec"]["command"])
                assert "local_raylet_healthz" in command and "-/healthz" not in command
