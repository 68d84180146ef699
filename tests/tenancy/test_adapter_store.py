"""Tenants' LoRA adapters in the store, on SQLite and PostgreSQL: registered only for a tenant
that may call the endpoint, under a name no other model id holds; found, listed and deleted
by their tenant only (another tenant's is as missing as one never made); an endpoint with
adapters is not deleted; every write is in the audit log."""

from __future__ import annotations

from dataclasses import replace

import pytest

from serving.catalogue import adapter_store as adapters
from serving.catalogue.adapter_store import NameTaken
from serving.catalogue.facts import read_adapter_facts
from serving.tenancy import Conflict, NotFound, Store, audit
from serving.tenancy.audit import Actor
from tests.unit import catalogue_files

OPS = Actor("admin", "afk_0ps4dmin", "admin", "10.0.0.7")


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    return read_adapter_facts(catalogue_files.demo_adapter(tmp_path_factory))


@pytest.fixture
def world(store: Store) -> Store:
    """acme and globex; `base` shared with both, `solo` acme's own, `private` shared with
    acme only."""
    for tenant in ("acme", "globex"):
        store.create_tenant(tenant)
    store.create_endpoint("base")
    store.grant("base", "acme")
    store.grant("base", "globex")
    store.create_endpoint("solo", owner="acme")
    store.create_endpoint("private")
    store.grant("private", "acme")
    return store


def register(store, facts, name="acme-support", tenant="acme", endpoint="base"):
    return adapters.register_adapter(store, name=name, tenant=tenant, endpoint=endpoint,
                                     path="/data/adapters/" + name, facts=facts)


def test_a_registered_adapter_is_its_tenants_model(world, facts, clock):
    made = register(world, facts)
    assert made == adapters.Adapter(
        name="acme-support", tenant="acme", endpoint="base", path="/data/adapters/acme-support",
        digest=facts.digest, rank=8, base_model=facts.base_model,
        target_modules=("q_proj", "v_proj"), created_at=clock.now)
    assert facts.digest.startswith("sha256:") and len(facts.digest) == 71
    assert adapters.tenant_adapter(world, "acme", "acme-support") == made
    assert adapters.adapters_of(world, "acme") == [made]
    assert made.as_json() == {
        "object": "adapter", "id": "acme-support", "name": "acme-support", "endpoint": "base",
        "tenant": "acme", "path": "/data/adapters/acme-support", "digest": facts.digest,
        "rank": 8, "base_model": facts.base_model, "target_modules": ["q_proj", "v_proj"],
        "created_at": int(clock.now.timestamp())}


def test_another_tenants_adapter_is_as_missing_as_none(world, facts):
    register(world, facts)
    assert adapters.tenant_adapter(world, "globex", "acme-support") is None
    assert adapters.tenant_adapter(world, "acme", "never-made") is None
    assert adapters.tenant_adapter(world, "acme", "Not A Name\0") is None
    assert adapters.adapters_of(world, "globex") == []
    with pytest.raises(NotFound) as theirs:
        adapters.get_adapter(world, "acme-support", tenant="globex")
    with pytest.raises(NotFound) as missing:
        adapters.get_adapter(world, "acme-supporx", tenant="globex")
    assert str(theirs.value) == str(missing.value).replace("supporx", "support")
    with pytest.raises(NotFound):
        adapters.delete_adapter(world, "acme-support", tenant="globex")
    assert adapters.tenant_adapter(world, "acme", "acme-support") is not None


@pytest.mark.parametrize(("tenant", "endpoint", "message"), [
    ("nobody", "base", "tenant: no tenant named 'nobody'"),
    ("acme", "nowhere", "endpoint: no endpoint named 'nowhere'"),
    # Not granted, or another tenant's own: told exactly as a missing endpoint.
    ("globex", "private", "endpoint: no endpoint named 'private'"),
    ("globex", "solo", "endpoint: no endpoint named 'solo'"),
])
def test_only_an_endpoint_the_tenant_may_call(world, facts, tenant, endpoint, message):
    with pytest.raises(NotFound, match=f"^{message}$"):
        register(world, facts, tenant=tenant, endpoint=endpoint)
    assert adapters.list_adapters(world) == []


def test_own_and_granted_endpoints_both_take_adapters(world, facts):
    register(world, facts, name="on-solo", endpoint="solo")
    register(world, facts, name="on-private", endpoint="private")
    register(world, facts, name="globex-one", tenant="globex")
    assert [a.name for a in adapters.list_adapters(world)] == ["globex-one", "on-private",
                                                               "on-solo"]
    assert [a.name for a in adapters.list_adapters(world, tenant="acme")] == ["on-private",
                                                                              "on-solo"]
    assert [a.name for a in adapters.list_adapters(world, endpoint="base")] == ["globex-one"]
    assert adapters.list_adapters(world, tenant="globex", endpoint="solo") == []


@pytest.mark.parametrize("name", ["acme-support", "base", "solo"])
def test_a_name_is_one_model_id_platform_wide(world, facts, name):
    register(world, facts)
    with pytest.raises(NameTaken) as taken:
        register(world, facts, name=name, tenant="globex")
    # Whose it is (acme's adapter, an endpoint) is not told: the message is the same.
    assert str(taken.value) == f"name: {name!r} is taken by another model; pick another name"
    assert [a.name for a in adapters.adapters_of(world, "globex")] == []
    with pytest.raises(NameTaken):
        adapters.ensure_free(world, name)


def test_no_endpoint_takes_an_adapters_name(world, facts):
    register(world, facts)
    with pytest.raises(Conflict, match="LoRA adapter"):
        world.create_endpoint("acme-support")
    assert "acme-support" not in [e.name for e in world.list_endpoints()]


def test_a_regex_of_targets_and_no_base_name_are_kept(world, facts):
    odd = replace(facts, target_modules=r".*\.(q|v)_proj", base_model=None)
    made = register(world, odd)
    assert adapters.tenant_adapter(world, "acme", made.name).target_modules == \
        r".*\.(q|v)_proj"
    assert made.as_json()["base_model"] is None


def test_facts_without_a_rank_are_never_stored(world, facts):
    with pytest.raises(ValueError, match="rank"):
        register(world, replace(facts, rank=None))
    assert adapters.list_adapters(world) == []


def test_delete_by_the_owner_or_an_operator(world, facts):
    register(world, facts)
    register(world, facts, name="second")
    assert adapters.delete_adapter(world, "acme-support", tenant="acme").name == "acme-support"
    assert adapters.delete_adapter(world, "second").name == "second"
    assert adapters.list_adapters(world) == []
    with pytest.raises(NotFound, match="no adapter named 'second'"):
        adapters.delete_adapter(world, "second")


def test_an_endpoint_with_adapters_is_not_deleted(world, facts):
    register(world, facts)
    with pytest.raises(Conflict, match="1 LoRA adapter"):
        world.delete_endpoint("base")
    assert world.get_endpoint("base").name == "base"
    adapters.delete_adapter(world, "acme-support")
    world.delete_endpoint("base")
    with pytest.raises(NotFound):
        world.get_endpoint("base")


def test_writes_are_in_the_audit_log(world, facts):
    acting = world.acting_as(OPS)
    register(acting, facts)
    adapters.delete_adapter(acting, "acme-support")
    entries = [e for e in audit.read(world.engine, audit.AuditQuery()).entries
               if e.action.startswith("adapter.")]
    assert [(e.action, e.target, e.tenant, e.actor_key_prefix) for e in entries] == [
        ("adapter.create", "adapter/acme-support", "acme", "afk_0ps4dmin"),
        ("adapter.delete", "adapter/acme-support", "acme", "afk_0ps4dmin")]
    shown = {"endpoint": "base", "path": "/data/adapters/acme-support",
             "digest": facts.digest, "rank": 8}
    assert (entries[0].before, entries[0].after) == (None, shown)
    assert (entries[1].before, entries[1].after) == (shown, None)


def test_a_refused_registration_leaves_no_audit_entry(world, facts):
    acting = world.acting_as(OPS)
    register(acting, facts)
    with pytest.raises(NameTaken):
        register(acting, facts)
    actions = [e.action for e in audit.read(world.engine, audit.AuditQuery()).entries]
    assert actions.count("adapter.create") == 1
