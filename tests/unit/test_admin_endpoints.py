"""Checks on an endpoint created through the admin API, before anything is deployed: its
fields, and whether it fits the partition beside what is promised already."""

from __future__ import annotations

import pytest

from deployments.admin_endpoints import accelerators_held, check_fits, parse_deployment
from deployments.config import EndpointConfig, PartitionConfig
from serving.targets.registry import EndpointTargets
from serving.tenancy import Conflict, Invalid

DEMO = {"model": "builtin:demo", "engine": {"max_model_len": 512}}


def endpoint(name: str, **fields) -> EndpointConfig:
    return EndpointConfig(name=name, **{"model": "builtin:demo", **fields})


def test_a_deployment_reads_as_a_config_endpoint() -> None:
    parsed = parse_deployment("popup", {**DEMO, "replicas": 2, "accelerators_per_replica": 0.5})
    assert (parsed.name, parsed.replicas, parsed.accelerators_per_replica) == ("popup", 2, 0.5)
    assert parsed.engine.max_model_len == 512


@pytest.mark.parametrize("deployment, field", [
    ({**DEMO, "colocated": True}, "deployment"),             # not an admin-created endpoint's
    ({**DEMO, "autoscaling": {"max_replicas": 2}}, "deployment"),
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


def test_configured_endpoints_hold_their_most_and_created_ones_their_replicas() -> None:
    configured = [endpoint("a", replicas=1),
                  endpoint("b", replicas=1, accelerators_per_replica=0.5,
                           engine={"max_model_len": 512},
                           autoscaling={"min_replicas": 0, "max_replicas": 4})]
    created = [endpoint("c", replicas=3)]
    assert accelerators_held(configured, created) == 1 + 4 * 0.5 + 3


def test_an_endpoint_fits_up_to_the_last_slot_and_not_beyond() -> None:
    partition = PartitionConfig(accelerator="cpu", count=8)
    check_fits(partition, 6, endpoint("p", replicas=2))
    with pytest.raises(Conflict, match="6 of 8 are promised"):
        check_fits(partition, 6, endpoint("p", replicas=3))
    with pytest.raises(Conflict):
        check_fits(partition, 7.5, endpoint("p", replicas=1))


def test_targets_keep_configured_endpoints_and_let_created_ones_come_and_go() -> None:
    targets = EndpointTargets({"demo": "configured"})
    targets.add("popup", "created")
    assert dict(targets) == {"demo": "configured", "popup": "created"} and len(targets) == 2
    targets.add("demo", "shadow")  # a created endpoint never shadows a configured one
    assert targets["demo"] == "configured" and len(targets) == 2
    targets.remove("popup")
    targets.remove("demo")
    assert dict(targets) == {"demo": "configured"} and targets.get("popup") is None
