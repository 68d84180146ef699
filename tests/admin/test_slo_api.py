"""Tenant SLO targets through the admin API over real HTTP on SQLite and PostgreSQL: set on
create, merged on update, null restores a default, bad values refused with the field named."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from observability.slo import SloSettings, SloTargets

if TYPE_CHECKING:
    from tests.admin.conftest import Api


def test_targets_are_set_on_create_and_merged_on_update(api: Api) -> None:
    created = api.client.post("/tenants", json={
        "name": "acme", "slo": {"ttft_p95_ms": 800, "objective": 0.995}})
    assert created.status_code == 201, created.text
    assert created.json()["slo"] == {"ttft_p95_ms": 800, "itl_p95_ms": None, "objective": 0.995}
    assert created.json()["slo_targets"] == {"ttft_p95_ms": 800, "itl_p95_ms": 200,
                                             "objective": 0.995}

    # itl set, objective back to its default, ttft left out so kept.
    updated = api.client.patch("/tenants/acme", json={"slo": {"itl_p95_ms": 40,
                                                              "objective": None}})
    assert updated.status_code == 200, updated.text
    assert updated.json()["slo"] == {"ttft_p95_ms": 800, "itl_p95_ms": 40, "objective": None}
    assert api.client.get("/tenants/acme").json()["slo_targets"] == {
        "ttft_p95_ms": 800, "itl_p95_ms": 40, "objective": 0.99}
    assert api.store.get_tenant("acme").slo == SloTargets(ttft_p95_s=0.8, itl_p95_s=0.04)

    # Other updates leave the targets alone.
    api.client.patch("/tenants/acme", json={"priority": "critical"})
    assert api.store.get_tenant("acme").slo_settings == SloSettings(ttft_p95_ms=800, itl_p95_ms=40)
    key = api.store.create_key("acme").plaintext
    assert api.store.authenticate(key).slo == SloTargets(ttft_p95_s=0.8, itl_p95_s=0.04)


@pytest.mark.parametrize(("method", "path", "body", "param", "words"), [
    ("POST", "/tenants", {"name": "beta", "slo": {"ttft_p95_ms": 0}}, "ttft_p95_ms",
     "whole milliseconds"),
    ("POST", "/tenants", {"name": "beta", "slo": {"objective": 1}}, "objective", "ratio"),
    ("PATCH", "/tenants/acme", {"slo": {"itl_p95_ms": 60_001}}, "itl_p95_ms",
     "whole milliseconds"),
    ("PATCH", "/tenants/acme", {"slo": {"itl_p95_ms": "fast"}}, None, "itl_p95_ms"),
    ("PATCH", "/tenants/acme", {"slo": {"ttft_ms": 5}}, None, "Extra inputs"),
    ("PATCH", "/tenants/acme", {"slo": {"objective": 0.1}}, "objective", "ratio"),
])
def test_bad_targets_are_refused_and_change_nothing(api: Api, method: str, path: str,
                                                    body: dict, param: str | None,
                                                    words: str) -> None:
    api.store.create_tenant("acme", slo=SloSettings(ttft_p95_ms=900))
    before = api.snapshot()
    response = api.client.request(method, path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert words in error["message"], error["message"]
    if param is not None:
        assert error["param"] == param
    assert api.snapshot() == before
    assert api.store.get_tenant("acme").slo_settings == SloSettings(ttft_p95_ms=900)
