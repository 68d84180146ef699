"""Ray custom resources in the config: they pin engine and gateway replicas to the nodes of a
cluster that offer them, and refuse Ray's built-in resource names."""

from __future__ import annotations

import pytest

from deployments.app import engine_resources, with_custom_resources
from deployments.config import ConfigError, parse_config

ENDPOINT = {"name": "a", "model": "/models/a"}


@pytest.mark.parametrize(
    "data,where,why",
    [
        ({"endpoints": [{**ENDPOINT, "resources": {"GPU": 1}}]},
         "endpoints.0.resources", "Ray sets GPU itself"),
        ({"endpoints": [{**ENDPOINT, "resources": {"engine_node": 0}}]},
         "endpoints.0.resources.engine_node", "greater than 0"),
        ({"endpoints": [{**ENDPOINT, "resources": {"": 1}}]},
         "endpoints.0.resources..[key]", "at least 1 character"),
        ({"server": {"resources": {"CPU": 1, "memory": 2}}, "endpoints": [ENDPOINT]},
         "server.resources", "Ray sets CPU, memory itself"),
    ],
)
def test_builtin_or_empty_resources_are_refused(data, where, why):
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.yaml")
    assert f"{where}:" in str(info.value) and why in str(info.value), str(info.value)


def test_cpu_replica_asks_for_its_slots_and_the_custom_resource():
    cfg = parse_config({"endpoints": [{**ENDPOINT, "accelerators_per_replica": 2,
                                       "resources": {"engine_node": 1}}]})
    assert engine_resources(cfg.endpoints[0], cfg.partition) == {
        "ray_actor_options": {"num_cpus": 2, "resources": {"engine_node": 1}}}


def test_gpu_replica_keeps_its_gpus_beside_the_custom_resource():
    cfg = parse_config({"partition": {"accelerator": "gpu", "count": 4},
                        "endpoints": [{**ENDPOINT, "accelerators_per_replica": 0.5,
                                       "resources": {"a100": 0.5}}]})
    assert engine_resources(cfg.endpoints[0], cfg.partition) == {
        "ray_actor_options": {"num_cpus": 1, "num_gpus": 0.5, "resources": {"a100": 0.5}}}


def test_tensor_parallel_replica_carries_the_resource_in_its_first_bundle():
    # Serve places the replica actor in bundle 0; STRICT_PACK keeps the GPU bundles beside it,
    # so the custom resource in bundle 0 pins the whole group to one node that has it.
    cfg = parse_config({"partition": {"accelerator": "gpu", "count": 4},
                        "endpoints": [{**ENDPOINT, "accelerators_per_replica": 2,
                                       "engine": {"tensor_parallel_size": 2},
                                       "resources": {"engine_node": 1}}]})
    options = engine_resources(cfg.endpoints[0], cfg.partition)
    assert options["ray_actor_options"] == {"num_cpus": 1, "resources": {"engine_node": 1}}
    assert options["placement_group_bundles"] == [
        {"CPU": 1, "engine_node": 1}, {"GPU": 1}, {"GPU": 1}]


def test_no_custom_resources_leave_options_as_they_were():
    cfg = parse_config({"endpoints": [ENDPOINT]})
    assert engine_resources(cfg.endpoints[0], cfg.partition) == {
        "ray_actor_options": {"num_cpus": 1}}


def test_gateway_and_colocated_engine_resources_add_up():
    # A colocated engine's replica is a gateway replica: it needs both nodes' marks.
    options = {"ray_actor_options": {"num_cpus": 1, "resources": {"engine_node": 1}}}
    assert with_custom_resources(options, {"gateway_node": 1, "engine_node": 0.5}) == {
        "ray_actor_options": {"num_cpus": 1,
                              "resources": {"engine_node": 1.5, "gateway_node": 1}}}
