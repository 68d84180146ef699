"""Which Ray nodes get a warm forkserver's keeper (deployments.node_forkservers); the keeper
and the replicas using its server run end to end (tests/e2e/test_engine_processes.py,
tests/e2e_multinode)."""

from deployments.node_forkservers import actor_name, hosts_engines


def test_only_nodes_that_can_host_an_engine_keep_a_server():
    assert hosts_engines({"Resources": {"CPU": 8.0, "memory": 1e9}})
    assert hosts_engines({"Resources": {"CPU": 0.0, "GPU": 4.0}})
    assert not hosts_engines({"Resources": {"CPU": 0.0, "memory": 1e9}})  # a KubeRay head
    assert not hosts_engines({"Resources": None})
    assert not hosts_engines({})


def test_each_node_has_its_own_keeper_name():
    assert actor_name("abc") != actor_name("abd")
    assert actor_name("abc").startswith("aifactory-forkserver-")
