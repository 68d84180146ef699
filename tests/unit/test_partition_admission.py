"""The partition shared by the config's endpoints and those created through the admin API:
admission counts guarantees (max_replicas is borrowed, never promised), and the
controller's view merges both kinds. Pure: no store, no Ray."""

from __future__ import annotations

import pytest

from deployments.config import EndpointConfig, PartitionConfig
from deployments.partition import autoscaled_partition, check_fits, guaranteed
from deployments.partition_source import partition_view
from serving.tenancy import Conflict

ENGINE = {"max_model_len": 512}


def fixed(name: str, replicas: int = 1, cost: float = 1.0) -> EndpointConfig:
    return EndpointConfig(name=name, model="builtin:demo", replicas=replicas,
                          accelerators_per_replica=cost, engine=ENGINE)


def scaled(name: str, guarantee: int = 0, most: int = 4, cost: float = 1.0,
           replicas: int = 1, **more) -> EndpointConfig:
    return EndpointConfig(name=name, model="builtin:demo", replicas=replicas,
                          accelerators_per_replica=cost, engine=ENGINE,
                          autoscaling={"max_replicas": most, "guaranteed_replicas": guarantee,
                                       **more})


@pytest.mark.parametrize(("endpoint", "owed"), [
    (fixed("f", replicas=3, cost=0.5), 1.5),       # a fixed-size endpoint: its replicas
    (scaled("s", guarantee=2, most=8, cost=0.5), 1.0),  # autoscaled: 2 x 0.5, not 8 x 0.5
    (scaled("z", guarantee=0, most=8), 0.0),       # nothing owed: it only borrows
])
def test_what_the_partition_owes_an_endpoint(endpoint, owed):
    assert guaranteed(endpoint) == owed


TWO = PartitionConfig(accelerator="cpu", count=2)


@pytest.mark.parametrize(("others", "new", "fits"), [
    # The case: max_replicas add up to 4 of 2 slots, guarantees to 2 of 2; a
    # borrower with no guarantee is admitted where the old rule said "4 of 2 are promised".
    ([scaled("a", 1, 2), scaled("b", 1, 2)], scaled("c", 0, 2), True),
    # 1 + 1 + 1 > 2
    ([scaled("a", 1, 2), scaled("b", 1, 2)], scaled("c", 1, 2), False),
    # 1 + 0.5 x 2 = 2: up to the last slot
    ([scaled("a", 1, 2)], scaled("c", 2, 4, cost=0.5), True),
    # a fixed endpoint's replicas are guaranteed: 1 + 2 > 2
    ([scaled("a", 1, 2)], fixed("f", 2), False),
    ([scaled("a", 0, 2)], fixed("f", 2), True),
    # one replica must fit what fixed endpoints leave: 2 - 1.5 = 0.5 < 1
    ([fixed("f", 3, 0.5)], scaled("c", 0, 2), False),
])
def test_admission_counts_guarantees_not_max_replicas(others, new, fits):
    if fits:
        check_fits(TWO, others, new)
    else:
        with pytest.raises(Conflict):
            check_fits(TWO, others, new)


def test_a_refusal_names_the_numbers_not_the_other_endpoints():
    with pytest.raises(Conflict) as refused:
        check_fits(TWO, [scaled("acme-secret", 1, 2), fixed("beta-chat")],
                   scaled("c", 1, 2), field="autoscaling")
    message = str(refused.value)
    assert message == ("autoscaling: a guarantee of 1 x 1 cpu slots does not fit the "
                       "partition: 2 of 2 are guaranteed to other endpoints")
    assert "acme" not in message and "beta" not in message
    with pytest.raises(Conflict, match=r"^deployment: 3 x 1 cpu slots do not fit the "
                                       r"partition: 0 of 2 are guaranteed"):
        check_fits(TWO, [], fixed("f", 3))
    with pytest.raises(Conflict, match="fixed-size endpoints leave 0.5 of 2"):
        check_fits(TWO, [fixed("f", 3, 0.5)], scaled("c", 0, 2))


def test_the_controller_sees_both_kinds_of_endpoints_in_one_partition():
    partition = PartitionConfig(accelerator="cpu", count=6,
                                autoscaler={"tuning": {"upscale_window_s": 3}})
    configured = [fixed("gw", 1), scaled("burst", 1, 4, priority=2)]
    created = [scaled("popup", 0, 2, replicas=0, idle_to_zero_s=30), fixed("pinned", 2, 0.5)]
    view = partition_view(partition, configured, created, "aifactory", "aifactory-endpoints")
    # capacity: 6 - 1 (gw) - 2 x 0.5 (pinned) = 4, shared by the autoscaled two
    assert view.spec.capacity == 4
    assert [e.name for e in view.spec.endpoints] == ["burst", "popup"]
    assert view.spec.tuning.upscale_window_s == 3
    popup = view.spec.endpoint("popup")
    assert (popup.guaranteed_replicas, popup.max_replicas, popup.idle_to_zero_s) == (0, 2, 30)
    assert view.spec.endpoint("burst").priority == 2
    assert view.deployments == {"burst": ("aifactory", "engine-burst"),
                                "popup": ("aifactory-endpoints", "engine-popup")}
    assert view.initial == {"burst": 1, "popup": 0}
    assert view.deployed == {"popup": 1}  # Serve takes no deployment of 0 replicas


def test_no_autoscaled_endpoint_is_no_partition_to_decide():
    view = partition_view(TWO, [fixed("a")], [fixed("b")], "app", "created")
    assert view.spec is None and view.endpoints == () and view.name == "default"
    assert autoscaled_partition(TWO, []) is None


def test_guarantees_beyond_the_partition_do_not_make_a_view():
    # Admission keeps this from happening; a config shrunk under created endpoints may not.
    with pytest.raises(ValueError, match="guarantees add up to 3"):
        partition_view(TWO, [scaled("a", 2, 2)], [scaled("b", 1, 2)], "app", "created")
