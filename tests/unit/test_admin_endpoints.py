"""Checks on an endpoint created through the admin API, before anything is deployed: its
fields and autoscaling block, and what Serve is given for it. (Whether it fits the
partition: test_partition_admission.)"""

from __future__ import annotations

import pytest

from deployments.admin_endpoints import parse_deployment, with_autoscaling
from serving.targets.registry import EndpointTargets
from serving.tenancy import Conflict, Invalid

DEMO = {"model": "builtin:demo", "engine": {"max_model_len": 512}}


def test_a_deployment_reads_as_a_config_endpoint() -> None:
    parsed = parse_deployment("popup", {**DEMO, "replicas": 2, "accelerators_per_replica": 0.5})
    assert (parsed.name, parsed.replicas, parsed.accelerators_per_replica) == ("popup", 2, 0.5)
    assert parsed.engine.max_model_len == 512


@pytest.mark.parametrize("deployment, field", [
    ({**DEMO, "colocated": True}, "deployment"),             # not an admin-created endpoint's
    ({**DEMO, "autoscaling": {"max_replicas": 2, "surge": 1}}, "deployment.autoscaling.surge"),
    ({**DEMO, "autoscaling": {"max_replicas": True}}, "deployment.autoscaling.max_replicas"),
    ({**DEMO, "autoscaling": {"max_replicas": "2"}}, "deployment.autoscaling.max_replicas"),
    ({**DEMO, "autoscaling": [2]}, "deployment.autoscaling"),
    ({**DEMO, "autoscaling": {"max_replicas": 1, "min_replicas": 2}}, "deployment.autoscaling"),
    ({**DEMO, "autoscaling": {"max_replicas": 2, "guaranteed_replicas": 3}},
     "deployment.autoscaling"),
    ({**DEMO, "autoscaling": {"max_replicas": 2, "min_replicas": 1}},  # a floor not guaranteed
     "deployment.autoscaling"),
    ({**DEMO, "autoscaling": {"max_replicas": 2, "idle_to_zero_s": 0}},
     "deployment.autoscaling.idle_to_zero_s"),
    ({"engine": {"max_model_len": 512}}, "deployment.model"),  # required
    ({**DEMO, "replicas": 0}, "deployment.replicas"),
    ({**DEMO, "replicas": "two"}, "deployment.replicas"),
    ({"model": "builtin:demo"}, "deployment.engine.max_model_len"),
    ({**DEMO, "engine": {"max_model_len": 512, "dtype": "int3"}}, "deployment.engine.dtype"),
])
def test_bad_deployments_are_refused_naming_the_field(deployment, field) -> None:
    with pytest.raises(Invalid) as refused:
        parse_deployment("popup", deployment)
    assert refused.value.field == field


def test_an_autoscaled_deployment_may_start_at_zero() -> None:
    parsed = parse_deployment("popup", {**DEMO, "replicas": 0, "autoscaling": {
        "max_replicas": 2, "guaranteed_replicas": 1, "slo": {"ttft_p95_ms": 500}}})
    assert (parsed.replicas, parsed.autoscaling.guaranteed_replicas) == (0, 1)
    assert (parsed.autoscaling.slo.ttft_p95_ms, parsed.autoscaling.slo.itl_p95_ms) == (500, 200)


def test_an_autoscaling_change_merges_into_the_stored_block() -> None:
    stored = {**DEMO, "autoscaling": {"max_replicas": 2, "priority": 1,
                                      "slo": {"ttft_p95_ms": 500, "itl_p95_ms": 50}}}
    changed = with_autoscaling("popup", stored, {"max_replicas": 4, "slo": {"itl_p95_ms": 80}})
    assert changed["autoscaling"] == {"max_replicas": 4, "priority": 1,
                                      "slo": {"ttft_p95_ms": 500, "itl_p95_ms": 80}}
    assert changed["model"] == "builtin:demo" and stored["autoscaling"]["max_replicas"] == 2
    with pytest.raises(Conflict, match="runs a fixed replica count"):
        with_autoscaling("popup", DEMO, {"max_replicas": 4})
    with pytest.raises(Conflict, match="not deployed through the admin API"):
        with_autoscaling("popup", None, {"max_replicas": 4})


def test_targets_keep_configured_endpoints_and_let_created_ones_come_and_go() -> None:
    targets = EndpointTargets({"demo": "configured"})
    targets.add("popup", "created")
    assert dict(targets) == {"demo": "configured", "popup": "created"} and len(targets) == 2
    targets.add("demo", "shadow")  # a created endpoint never shadows a configured one
    assert targets["demo"] == "configured" and len(targets) == 2
    targets.remove("popup")
    targets.remove("demo")
    assert dict(targets) == {"demo": "configured"} and targets.get("popup") is None


def test_an_autoscaling_change_leaves_serves_deployment_as_it_was() -> None:
    """Serve restarts a deployment's replicas on a new version and resets its replica
    target on a new config; neither may follow from a change of the autoscaling block
    (the controller owns the target)."""
    from deployments.admin_endpoints import DeployerSettings, ServeEndpointDeployer

    deployer = ServeEndpointDeployer(
        DeployerSettings(partition={"accelerator": "cpu", "count": 4}, configured=[],
                         builtin_models={"builtin:demo": "/models/demo"}, link_secret="00"),
        store=None, targets=None, links=None, autoscaler="controller")

    def engine(**autoscaling):
        app = deployer._engine(parse_deployment("popup", {
            **DEMO, "replicas": 0, "autoscaling": {"max_replicas": 2, **autoscaling}}))
        deployment = app._bound_deployment
        return (deployment._version, deployment._deployment_config.num_replicas,
                deployment._deployment_config.max_queued_requests,
                deployment._replica_config.init_args[-1])

    before = engine()
    # Serve takes no deployment of 0 replicas: deployed with one, which the controller
    # takes back at once; it reports its load to the controller.
    assert before[1] == 1 and before[3] == "controller"
    assert engine(max_replicas=4, guaranteed_replicas=2, priority=9) == before
