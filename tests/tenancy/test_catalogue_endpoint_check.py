"""An endpoint created with `model: catalogue:NAME` (the check an admin-created endpoint
passes before it is stored and deployed), on the real store: the entry's folder is what
runs, the entry is recorded so it cannot be deleted under the endpoint, and its placement
proposal is used where the operator gave none. No Ray: nothing is deployed."""

from __future__ import annotations

import pytest

from deployments.admin_endpoints import (
    DeployerSettings,
    ServeEndpointDeployer,
    partition_device_bytes,
)
from deployments.config import PartitionConfig
from serving.catalogue import model_store
from serving.catalogue.facts import read_model_facts
from serving.catalogue.placement import size
from serving.tenancy import Conflict, Invalid
from tests.unit.catalogue_files import demo_model

GIB = 1024**3


@pytest.fixture
def deployer(store, tmp_path_factory):
    facts = read_model_facts(demo_model(tmp_path_factory))
    model_store.register(store, name="demo-ft", owner=None, version=None, facts=facts,
                         architecture="LlamaForCausalLM")
    settings = DeployerSettings(partition={"accelerator": "cpu", "count": 8}, configured=[],
                                builtin_models={}, link_secret="s")
    return ServeEndpointDeployer(settings, store, targets=None, links=None)


async def test_the_entry_runs_its_folder_with_the_proposed_share(deployer, store):
    checked = await deployer.check("chat", {"model": "catalogue:demo-ft",
                                            "engine": {"max_model_len": 1024}})
    entry = model_store.get(store, "demo-ft")
    proposal = size(entry, deployer.accelerator_memory(), 1024, 8).proposals["cpu"]
    assert proposal.fits and proposal.accelerators_per_replica == 1.0  # whole cores
    assert (checked["model"], checked["catalogue"], checked["accelerators_per_replica"]) == (
        entry.source, "demo-ft", proposal.accelerators_per_replica)
    # Stored as checked, the entry is in use until the endpoint goes.
    store.create_endpoint("chat", deployment=checked)
    with pytest.raises(Conflict, match="used by endpoint"):
        model_store.delete(store, "demo-ft")


async def test_an_operators_share_is_kept_and_a_path_model_is_no_catalogue_entry(deployer):
    checked = await deployer.check("chat", {"model": "catalogue:demo-ft",
                                            "accelerators_per_replica": 1.5,
                                            "engine": {"max_model_len": 1024}})
    assert checked["accelerators_per_replica"] == 1.5
    by_path = await deployer.check("raw", {"model": checked["model"],
                                           "engine": {"max_model_len": 1024}})
    assert "catalogue" not in by_path and by_path["accelerators_per_replica"] == 1.0


@pytest.mark.parametrize("deployment, words", [
    ({"model": "catalogue:nope"}, "no catalogue model named 'nope'"),
    ({"model": "catalogue:../x"}, "must match"),
    ({"model": "/x", "catalogue": "demo-ft"}, "is set by the platform"),
])
async def test_an_unknown_entry_or_a_forged_link_is_refused(deployer, deployment, words):
    with pytest.raises(Invalid, match=words) as refused:
        await deployer.check("chat", {**deployment, "engine": {"max_model_len": 1024}})
    assert refused.value.field.startswith("deployment.")


def test_a_cpu_slot_is_its_share_of_the_host_and_a_gpu_as_configured_or_assumed():
    assert partition_device_bytes(PartitionConfig(accelerator="cpu", count=8), 64 * GIB) == {
        "cpu": 8 * GIB}
    assert partition_device_bytes(PartitionConfig(accelerator="gpu", count=4), 64 * GIB) == {
        "gpu": 80 * GIB}
