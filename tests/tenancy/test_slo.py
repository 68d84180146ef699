"""Per-tenant SLO targets on SQLite and PostgreSQL: defaults, set and restored, carried on the
Principal, refused when out of range, kept by the migration that adds them, set from config."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from deployments.config import parse_config
from deployments.tenancy_setup import apply_config
from observability.slo import DEFAULT_SLO, SloSettings, SloTargets
from serving.tenancy import Invalid, Store, upgrade


def test_a_new_tenant_has_the_default_targets(store: Store) -> None:
    acme = store.create_tenant("acme")
    assert acme.slo_settings == SloSettings(ttft_p95_ms=None, itl_p95_ms=None, objective=None)
    assert acme.slo == DEFAULT_SLO == SloTargets(ttft_p95_s=2.0, itl_p95_s=0.2, objective=0.99)
    key = store.create_key("acme").plaintext
    assert store.authenticate(key).slo == DEFAULT_SLO


def test_targets_are_set_on_create_replaced_on_update_and_reach_the_principal(
        store: Store) -> None:
    created = store.create_tenant("acme", slo=SloSettings(ttft_p95_ms=500, objective=0.995))
    assert created.slo == SloTargets(ttft_p95_s=0.5, itl_p95_s=0.2, objective=0.995)
    key = store.create_key("acme").plaintext
    assert store.authenticate(key).slo == created.slo

    # Replacing all three: the TTFT target left None goes back to the default.
    updated = store.update_tenant("acme", slo=SloSettings(itl_p95_ms=50))
    assert updated.slo_settings == SloSettings(itl_p95_ms=50)
    assert store.get_tenant("acme").slo == SloTargets(ttft_p95_s=2.0, itl_p95_s=0.05)
    assert store.authenticate(key).slo == SloTargets(ttft_p95_s=2.0, itl_p95_s=0.05)
    # An update without `slo` keeps the targets.
    store.update_tenant("acme", priority="critical")
    assert store.get_tenant("acme").slo_settings == SloSettings(itl_p95_ms=50)


# Settings out of range cannot be made (observability.slo); given to the store as fields, as
# the admin API does, they are refused with the field named.
@pytest.mark.parametrize(("settings", "field"), [
    ({"ttft_p95_ms": 0}, "ttft_p95_ms"),
    ({"ttft_p95_ms": 600_001}, "ttft_p95_ms"),
    ({"ttft_p95_ms": 1.5}, "ttft_p95_ms"),
    ({"itl_p95_ms": -1}, "itl_p95_ms"),
    ({"itl_p95_ms": True}, "itl_p95_ms"),
    ({"objective": 1.0}, "objective"),  # no error budget left
    ({"objective": 0.2}, "objective"),
    ({"objective": float("nan")}, "objective"),
    ({"objective": "0.99"}, "objective"),
    ({"ttft_ms": 5}, "ttft_ms"),
])
def test_out_of_range_targets_are_refused_and_change_nothing(store: Store, settings: dict,
                                                              field: str) -> None:
    store.create_tenant("acme", slo=SloSettings(ttft_p95_ms=900))
    with pytest.raises(Invalid) as refused:
        store.update_tenant("acme", slo=settings)
    assert refused.value.field == field
    with pytest.raises(Invalid):
        store.create_tenant("beta", slo=settings)
    assert [t.name for t in store.list_tenants()] == ["acme"]
    assert store.get_tenant("acme").slo_settings == SloSettings(ttft_p95_ms=900)


def test_the_migration_adds_the_targets_and_keeps_every_row(empty_database_url: str) -> None:
    """0001 -> 0002 on a database with a tenant, its key and its quota: nothing is lost (on
    SQLite a table rebuild would cascade-delete the keys) and the targets start as defaults."""
    upgrade(empty_database_url, "0001")
    engine = sa.create_engine(empty_database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (id, name, priority, status, created_at) "
                             "VALUES (1, 'acme', 'standard', 'active', '2025-01-01 00:00:00')"))
        conn.execute(sa.text("INSERT INTO api_keys (tenant_id, key_hash, prefix, scope, "
                             "created_at) VALUES (1, 'h', 'afk_x', 'inference', "
                             "'2025-01-01 00:00:00')"))
        conn.execute(sa.text("INSERT INTO quotas (tenant_id, requests_per_minute) VALUES (1, 5)"))
    upgrade(empty_database_url)
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM api_keys")) == 1
        assert conn.scalar(sa.text("SELECT count(*) FROM quotas")) == 1
    engine.dispose()
    store = Store(empty_database_url)
    try:
        assert store.get_tenant("acme").slo == DEFAULT_SLO
        assert store.get_quota("acme").requests_per_minute == 5
    finally:
        store.close()


def test_the_config_sets_targets_and_leaving_them_out_keeps_them(store: Store) -> None:
    def config(slo: dict | None) -> object:
        tenant = {"name": "acme"} | ({} if slo is None else {"slo": slo})
        return parse_config({"tenants": [tenant], "endpoints": [
            {"name": "llama", "owner": "acme", "model": "builtin:demo"}]})

    apply_config(store, config({"ttft_p95_ms": 1500, "itl_p95_ms": 80, "objective": 0.999}))
    set_in_config = SloTargets(ttft_p95_s=1.5, itl_p95_s=0.08, objective=0.999)
    assert store.get_tenant("acme").slo == set_in_config
    apply_config(store, config(None))
    assert store.get_tenant("acme").slo == set_in_config
    apply_config(store, config({"itl_p95_ms": 100}))
    assert store.get_tenant("acme").slo == SloTargets(ttft_p95_s=2.0, itl_p95_s=0.1)
