"""The cluster manifests keep Ray closed (issue 16, H4): no Ray port bound for everyone, Ray's
token authentication on Slurm, a NetworkPolicy around Ray's ports on KubeRay, no secret
committed, and the `ray start` steps blind to the platform's secrets."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.manifests.test_slurm import _dry_run, bin_dir  # noqa: F401 (the fixture)

ROOT = Path(__file__).parents[2]
SBATCH = ROOT / "deployments" / "slurm" / "aifactory.sbatch"
MANIFEST = ROOT / "deployments" / "kuberay" / "rayservice.yaml"
SECRETS = ("AIFACTORY_DATABASE_URL", "AIFACTORY_ADMIN_KEY", "AIFACTORY_REDIS_URL",
           "AIFACTORY_LINK_SECRET")


def test_slurm_binds_the_dashboard_to_loopback_and_asks_for_ray_tokens():
    script = SBATCH.read_text()
    assert "0.0.0.0" not in re.sub(r"(?m)^#.*$", "", script)  # comments aside
    assert "--dashboard-host=127.0.0.1" in script
    assert re.search(r"export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=", script)
    assert "umask 077" in script and "chmod 0700" in script


def test_slurm_ray_steps_see_no_platform_secret(bin_dir):  # noqa: F811
    commands = _dry_run(bin_dir, **{name: "leak-me" for name in SECRETS})
    ray_steps = [c for c in commands if "ray" in c and "start" in c]
    assert len(ray_steps) == 2
    for step in ray_steps:
        [export] = [w for w in step if w.startswith("--export=")]
        exported = export.removeprefix("--export=").split(",")
        assert "ALL" not in exported and not set(exported) & set(SECRETS), exported
        assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"} <= set(exported)


def _documents() -> list[dict]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def test_kuberay_commits_no_secret():
    text = MANIFEST.read_text()
    assert not [d for d in _documents() if d["kind"] == "Secret"]
    assert "change-me" not in text
    assert not re.search(r"://[^/\s:@]+:[^@\s$]+@", text), "a URL with a password"

    def env_entries(node):
        if isinstance(node, dict):
            if "name" in node and ("value" in node or "valueFrom" in node):
                yield node
            for value in node.values():
                yield from env_entries(value)
        elif isinstance(node, list):
            for value in node:
                yield from env_entries(value)

    for entry in env_entries(_documents()):
        if re.search(r"PASSWORD|SECRET|TOKEN|DATABASE_URL|ADMIN_KEY", entry["name"]):
            assert "secretKeyRef" in entry.get("valueFrom", {}), entry


def test_kuberay_ray_ports_answer_the_cluster_and_its_operator_only():
    [policy] = [d for d in _documents() if d["kind"] == "NetworkPolicy"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {"ray.io/is-ray-node": "yes"}
    assert spec["policyTypes"] == ["Ingress"]
    open_to_all = [rule for rule in spec["ingress"] if "from" not in rule]
    public_ports = {p["port"] for rule in open_to_all for p in rule["ports"]}
    assert public_ports == {8000, 8100}  # the gateway and Serve's proxy, never Ray's own
    assert not public_ports & {6379, 8265, 10001, 52365}
    for rule in spec["ingress"]:
        assert "from" not in rule or rule["from"], "an empty `from` lets everyone in"


def test_kuberay_runs_as_the_images_user():
    [service] = [d for d in _documents() if d["kind"] == "RayService"]
    cluster = service["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]["spec"],
            *(g["template"]["spec"] for g in cluster["workerGroupSpecs"])]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
