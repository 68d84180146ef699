"""Stored Responses API responses on the real store (SQLite and PostgreSQL): found by their
own tenant only, gone after the retention or when deleted, the conversation kept whole, an
id taken refused rather than overwritten."""

from __future__ import annotations

from datetime import timedelta

import pytest

from serving.tenancy import Conflict
from serving.tenancy import stored_responses as responses


def response(rid: str, text: str = "hello") -> dict:
    return {"id": rid, "object": "response", "output": [
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": text, "annotations": []}]}]}


@pytest.fixture
def tenants(store):
    store.create_tenant("acme")
    store.create_tenant("globex")


def test_a_response_is_found_by_its_tenant_with_its_conversation(store, tenants):
    asked = [{"role": "user", "content": "hi"}]
    responses.save(store, response("resp_1"), tenant="acme", endpoint="demo",
                   conversation=asked)
    found = responses.find(store, "acme", "resp_1")
    assert found is not None and found.response == response("resp_1")
    assert found.conversation() == [*asked, *response("resp_1")["output"]]
    assert responses.find(store, "globex", "resp_1") is None  # another tenant's: missing
    assert responses.remove(store, "globex", "resp_1") is False
    assert responses.find(store, "acme", "resp_1") is not None


def test_retention_and_deletion(store, tenants, clock):
    responses.save(store, response("resp_old"), tenant="acme", endpoint="demo",
                   conversation=[], retention=timedelta(hours=1))
    responses.save(store, response("resp_kept"), tenant="acme", endpoint="demo",
                   conversation=[])
    clock.advance(hours=2)
    assert responses.find(store, "acme", "resp_old") is None
    assert responses.remove(store, "acme", "resp_old") is False
    responses.save(store, response("resp_new"), tenant="acme", endpoint="demo",
                   conversation=[])  # purges what expired on the way
    with store._tx() as s:
        from serving.tenancy.models import StoredResponseRow
        assert sorted(s.scalars(s.query(StoredResponseRow.id).statement)) == [
            "resp_kept", "resp_new"]
    assert responses.remove(store, "acme", "resp_kept") is True
    assert responses.find(store, "acme", "resp_kept") is None


def test_an_id_taken_is_refused_not_overwritten(store, tenants):
    responses.save(store, response("resp_x", "acme's"), tenant="acme", endpoint="demo",
                   conversation=[])
    with pytest.raises(Conflict):
        responses.save(store, response("resp_x", "globex's"), tenant="globex",
                       endpoint="demo", conversation=[])
    assert responses.find(store, "acme", "resp_x").response == response("resp_x", "acme's")


@pytest.mark.parametrize("rid", ["", "resp_", "x" * 70, "resp_a/b", "resp_\x00", 7, None,
                                 "msg_1"])
def test_ids_that_cannot_be_a_response_are_never_looked_up(store, tenants, rid):
    assert responses.find(store, "acme", rid) is None
    assert responses.remove(store, "acme", rid) is False
    with pytest.raises(ValueError):
        responses.save(store, {"id": rid}, tenant="acme", endpoint="demo", conversation=[])
