"""Migrations on SQLite and PostgreSQL, and where the database is found."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from serving.tenancy import Store, database_url_from_env, default_database_url, upgrade
from serving.tenancy.migrate import MIGRATIONS, VERSION_TABLE, alembic_config
from serving.tenancy.models import Base

TABLES = {"tenants", "api_keys", "endpoints", "endpoint_grants", "quotas", "usage_records",
          "admin_audit", "stored_responses", "batches", "batch_lines", "files",
          "file_quotas", "adapters", "catalogue_models"}
HEAD = "0013"


def revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def test_upgrade_creates_the_tables_on_an_empty_database(empty_database_url: str) -> None:
    engine = sa.create_engine(empty_database_url)
    assert sa.inspect(engine).get_table_names() == []
    upgrade(empty_database_url)
    assert set(sa.inspect(engine).get_table_names()) == TABLES | {VERSION_TABLE}
    head = ScriptDirectory.from_config(alembic_config(empty_database_url)).get_current_head()
    assert revision(engine) == head == HEAD
    engine.dispose()


def test_upgrade_twice_is_a_no_op(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    store = Store(empty_database_url)
    store.create_tenant("acme")
    store.close()
    engine = sa.create_engine(empty_database_url)
    tables = set(sa.inspect(engine).get_table_names())
    upgrade(empty_database_url)
    assert set(sa.inspect(engine).get_table_names()) == tables
    assert revision(engine) == HEAD
    engine.dispose()
    reopened = Store(empty_database_url)
    assert [t.name for t in reopened.list_tenants()] == ["acme"]
    reopened.close()


def test_the_migrations_build_exactly_the_models(empty_database_url: str) -> None:
    """Autogenerate finds nothing to do: the revisions and the models agree."""
    upgrade(empty_database_url)
    engine = sa.create_engine(empty_database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_migrations_ship_without_an_ini_file() -> None:
    assert (MIGRATIONS / "env.py").is_file() and (MIGRATIONS / "script.py.mako").is_file()
    assert not list(MIGRATIONS.parent.glob("alembic.ini"))


def test_default_url_is_a_sqlite_file_in_home(tmp_path: Path) -> None:
    assert default_database_url(tmp_path) == f"sqlite:///{tmp_path.resolve()}/aifactory.db"


def test_the_environment_overrides_the_default(tmp_path: Path) -> None:
    url = "postgresql+psycopg://aif@db:5432/aifactory"
    assert database_url_from_env(tmp_path, {"AIFACTORY_DATABASE_URL": url}) == url
    assert database_url_from_env(tmp_path, {"AIFACTORY_DATABASE_URL": " "}) == \
        default_database_url(tmp_path)
    assert database_url_from_env(tmp_path, {}) == default_database_url(tmp_path)


def test_the_sqlite_home_is_created(tmp_path: Path) -> None:
    home = tmp_path / "not" / "yet"
    upgrade(default_database_url(home))
    assert (home / "aifactory.db").is_file()


def test_an_endpoint_keeps_its_deployment(empty_database_url: str) -> None:
    """0003: how an endpoint created through the admin API is deployed, kept as JSON."""
    upgrade(empty_database_url)
    store = Store(empty_database_url)
    store.create_tenant("acme")
    spec = {"model": "builtin:demo", "replicas": 2, "engine": {"max_model_len": 512}}
    assert store.create_endpoint("popup", owner="acme", deployment=spec).deployment == spec
    store.create_endpoint("configured", owner="acme")
    assert {e.name: e.deployment for e in store.list_endpoints()} == {
        "configured": None, "popup": spec}
    store.close()


def test_a_ledger_of_0003_upgrades_keeping_its_rows(empty_database_url: str) -> None:
    """0004: the client's request id beside the platform's; earlier rows have none."""
    from alembic import command

    command.upgrade(alembic_config(empty_database_url), "0003")
    engine = sa.create_engine(empty_database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO usage_records (request_id, tenant, key_prefix, endpoint, prompt_tokens,"
            " completion_tokens, outcome, created_at) VALUES ('old-1', 'acme', 'afk_x', 'demo',"
            " 3, 4, 'ok', '2026-11-01 10:00:00')"))
    upgrade(empty_database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT request_id, client_request_id FROM usage_records")).all() == [("old-1", None)]
    engine.dispose()


def test_a_ledger_of_0004_upgrades_with_the_class_its_outcomes_imply(
        empty_database_url: str) -> None:
    """0005: errors from before are `unknown` (still faults), the rest as their outcome says."""
    from alembic import command

    command.upgrade(alembic_config(empty_database_url), "0004")
    engine = sa.create_engine(empty_database_url)
    with engine.begin() as conn:
        for n, outcome in enumerate(("ok", "error", "rejected", "client_cancelled")):
            conn.execute(sa.text(
                "INSERT INTO usage_records (request_id, tenant, key_prefix, endpoint,"
                " prompt_tokens, completion_tokens, outcome, created_at) VALUES (:id, 'acme',"
                " 'afk_x', 'demo', 1, 1, :outcome, '2026-11-01 10:00:00')"),
                {"id": f"old-{n}", "outcome": outcome})
    upgrade(empty_database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT outcome, http_status, error_class FROM "
                                    "usage_records ORDER BY request_id")).all()
    assert [tuple(r) for r in rows] == [("ok", 200, None), ("error", None, "unknown"),
                                        ("rejected", 429, "rate_limited"),
                                        ("client_cancelled", None, "cancelled")]
    engine.dispose()


def test_0006_adds_an_append_only_audit_log_and_takes_it_back(empty_database_url: str) -> None:
    """0006: the audit log, its triggers refusing UPDATE and DELETE; downgraded, nothing of it
    is left (so upgrading again works: on PostgreSQL its trigger function went too)."""
    from alembic import command

    config = alembic_config(empty_database_url)
    command.upgrade(config, "0005")
    upgrade(empty_database_url)
    engine = sa.create_engine(empty_database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO admin_audit (at, actor_tenant, actor_key_prefix, actor_scope, action,"
            " target) VALUES ('2026-12-03 10:00:00', 'admin', 'afk_x', 'admin', 'tenant.create',"
            " 'tenant/acme')"))
    for statement in ("UPDATE admin_audit SET target = 'tenant/other'", "DELETE FROM admin_audit"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text(statement))
    command.downgrade(config, "0005")
    assert "admin_audit" not in sa.inspect(engine).get_table_names()
    upgrade(empty_database_url)
    assert revision(engine) == HEAD
    engine.dispose()


def test_0009_adds_the_files_tables_and_takes_them_back(empty_database_url: str) -> None:
    """0009: files and each tenant's limits on them; downgraded, neither is left."""
    from alembic import command

    config = alembic_config(empty_database_url)
    command.upgrade(config, "0008")
    upgrade(empty_database_url)
    engine = sa.create_engine(empty_database_url)
    assert {"files", "file_quotas"} <= set(sa.inspect(engine).get_table_names())
    command.downgrade(config, "0008")
    assert not {"files", "file_quotas"} & set(sa.inspect(engine).get_table_names())
    upgrade(empty_database_url)
    assert revision(engine) == HEAD
    engine.dispose()


def test_a_ledger_of_0011_upgrades_keeping_its_rows_on_no_adapter(
        empty_database_url: str) -> None:
    """0012: the LoRA adapter a request ran with; earlier rows ran on their endpoint's own
    model (none). Downgraded, the column goes and the rows stay."""
    from alembic import command

    config = alembic_config(empty_database_url)
    command.upgrade(config, "0011")
    engine = sa.create_engine(empty_database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO usage_records (request_id, tenant, key_prefix, endpoint, prompt_tokens,"
            " completion_tokens, outcome, created_at) VALUES ('old-1', 'acme', 'afk_x', 'demo',"
            " 3, 4, 'ok', '2026-12-01 10:00:00')"))
    upgrade(empty_database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT request_id, adapter FROM usage_records")).all() == [("old-1", None)]
    command.downgrade(config, "0011")
    columns = {c["name"] for c in sa.inspect(engine).get_columns("usage_records")}
    assert "adapter" not in columns and "error_class" in columns
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT request_id FROM usage_records")).all() == [("old-1",)]
    upgrade(empty_database_url)
    assert revision(engine) == HEAD
    engine.dispose()
