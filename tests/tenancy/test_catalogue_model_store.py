"""The model catalogue on the real store (SQLite and PostgreSQL): an entry keeps the facts
read from its folder, names are unique, an owner must be a tenant, and an entry an endpoint
was created from is not deleted until that endpoint is."""

from __future__ import annotations

import pytest

from serving.catalogue import model_store
from serving.catalogue.facts import read_model_facts
from serving.catalogue.sizing import estimate_memory
from serving.tenancy import Conflict, Invalid, NotFound
from tests.unit.catalogue_files import demo_model


@pytest.fixture(scope="session")
def demo_facts(tmp_path_factory):
    return read_model_facts(demo_model(tmp_path_factory))


def register(store, facts, name="llama-ft-v3", owner=None, version="v3"):
    return model_store.register(store, name=name, owner=owner, version=version, facts=facts,
                                architecture="LlamaForCausalLM")


def test_an_entry_keeps_the_facts_it_was_registered_with(store, clock, demo_facts):
    made = register(store, demo_facts)
    got = model_store.get(store, "llama-ft-v3")
    assert got == made
    assert (got.source, got.digest, got.version, got.owner) == (
        demo_facts.path, demo_facts.digest, "v3", None)
    assert (got.architecture, got.parameter_count, got.dtype, got.context_length) == (
        "LlamaForCausalLM", 426_624, "bfloat16", 2048)
    assert (got.has_tokenizer, got.has_chat_template) == (True, True)
    assert got.created_at == clock.now
    # What sizing reads comes back whole: the same estimate as from the folder itself.
    assert estimate_memory(got.as_facts(), 2048, 4) == estimate_memory(demo_facts, 2048, 4)


def test_names_are_unique_and_owners_are_tenants(store, demo_facts):
    store.create_tenant("acme")
    register(store, demo_facts, owner="acme")
    with pytest.raises(Conflict, match="catalogue model 'llama-ft-v3' exists"):
        register(store, demo_facts, owner=None)
    with pytest.raises(Conflict):
        model_store.ensure_free(store, "llama-ft-v3")
    with pytest.raises(NotFound, match="no tenant named 'globex'"):
        register(store, demo_facts, name="other", owner="globex")
    with pytest.raises(Invalid, match="name: must match"):
        register(store, demo_facts, name="Bad Name")
    assert [m.name for m in model_store.list_models(store)] == ["llama-ft-v3"]


def test_lists_every_entry_by_name_or_one_tenants_own(store, demo_facts):
    store.create_tenant("acme")
    for name, owner in (("zeta", None), ("alpha", "acme"), ("mid", "acme")):
        register(store, demo_facts, name=name, owner=owner)
    assert [m.name for m in model_store.list_models(store)] == ["alpha", "mid", "zeta"]
    assert [m.name for m in model_store.list_models(store, owner="acme")] == ["alpha", "mid"]
    assert model_store.list_models(store, owner="nobody") == []


def test_delete_is_refused_while_an_endpoint_created_from_it_exists(store, demo_facts):
    register(store, demo_facts)
    register(store, demo_facts, name="unused")
    store.create_endpoint("chat", deployment={"model": demo_facts.path,
                                              "catalogue": "llama-ft-v3"})
    store.create_endpoint("chat-2", deployment={"model": demo_facts.path,
                                                "catalogue": "llama-ft-v3"})
    store.create_endpoint("by-path", deployment={"model": demo_facts.path})
    store.create_endpoint("registered-only")
    with pytest.raises(Conflict, match=r"used by endpoint\(s\) chat, chat-2; delete them"):
        model_store.delete(store, "llama-ft-v3")
    assert model_store.get(store, "llama-ft-v3").name == "llama-ft-v3"  # still there
    assert model_store.delete(store, "unused").name == "unused"
    store.delete_endpoint("chat")
    store.delete_endpoint("chat-2")
    model_store.delete(store, "llama-ft-v3")
    with pytest.raises(NotFound, match="no catalogue model named 'llama-ft-v3'"):
        model_store.get(store, "llama-ft-v3")
    with pytest.raises(NotFound):
        model_store.delete(store, "llama-ft-v3")
