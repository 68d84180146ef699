"""The admin CLI commands against the live admin API, `admin bootstrap` on each backend, and
`ensure_admin_key` as the platform's start-up calls it."""

from __future__ import annotations

import argparse
import csv
import io
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from deployments import admin_cli, admin_key
from deployments.admin_args import CliError, parse_moment
from deployments.admin_cli import register_admin_commands
from deployments.admin_key import ensure_admin_key
from serving.tenancy import (
    Invalid,
    KeyScope,
    Outcome,
    PriorityClass,
    Store,
    TenantStatus,
    Unauthenticated,
    UsageRecord,
)

if TYPE_CHECKING:
    from tests.admin.conftest import Api


def aifactory(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run one command as `aifactory ...` would: the same parser, the same `func`."""
    parser = argparse.ArgumentParser(prog="aifactory")
    register_admin_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli(api: Api, capsys: pytest.CaptureFixture[str]):
    """`aifactory` against the test's admin API with its admin key."""

    def run(*argv: str) -> tuple[int, str, str]:
        return aifactory(capsys, *argv, "--url", api.url, "--admin-key", api.admin_key)

    return run


def rows(table: str) -> list[list[str]]:
    """A printed table as cells, split on its runs of two or more spaces."""
    return [[cell.strip() for cell in line.split("  ") if cell.strip()]
            for line in table.strip().splitlines()]


# The commands, as people read them and as --json gives them


def test_tenant_commands(cli, api: Api) -> None:
    code, out, _ = cli("tenant", "create", "acme", "--priority", "critical")
    assert code == 0
    assert rows(out)[0] == ["NAME", "PRIORITY", "STATUS", "CREATED"]
    assert rows(out)[1][:3] == ["acme", "critical", "active"]
    code, out, _ = cli("tenant", "update", "acme", "--status", "suspended", "--json")
    assert code == 0 and json.loads(out)["status"] == "suspended"
    code, out, _ = cli("tenant", "list")
    assert [r[:3] for r in rows(out)[1:]] == [["acme", "critical", "suspended"],
                                              ["admin", "critical", "active"]]
    code, out, _ = cli("tenant", "list", "--json")
    assert [t["name"] for t in json.loads(out)["data"]] == ["acme", "admin"]
    assert api.store.get_tenant("acme").status == TenantStatus.SUSPENDED


def test_key_commands(cli, api: Api) -> None:
    api.store.create_tenant("acme")
    code, out, _ = cli("key", "create", "acme", "--expires", "90d")
    assert code == 0
    plaintext = out.splitlines()[0].removeprefix("key: ")
    assert api.store.authenticate(plaintext).scope == KeyScope.INFERENCE
    assert "shown once" in out
    expires = api.store.list_keys("acme")[0].expires_at
    assert abs(expires - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=1)

    code, out, _ = cli("key", "create", "acme", "--scope", "admin", "--json")
    created = json.loads(out)
    assert (created["scope"], created["expires_at"]) == ("admin", None)
    assert created["key"].startswith("afk_")

    code, out, _ = cli("key", "list", "acme")
    assert plaintext not in out and created["key"] not in out
    assert rows(out)[0] == ["ID", "TENANT", "PREFIX", "SCOPE", "STATUS", "CREATED", "EXPIRES",
                            "REVOKED"]
    assert [r[:5] for r in rows(out)[1:]] == [
        ["2", "acme", plaintext[:12], "inference", "active"],
        ["3", "acme", created["prefix"], "admin", "active"]]

    code, out, _ = cli("key", "revoke", "2")
    assert code == 0 and rows(out)[1][4] == "revoked"
    with pytest.raises(Unauthenticated):
        api.store.authenticate(plaintext)


def test_endpoint_and_grant_commands(cli, api: Api) -> None:
    for name in ("acme", "beta"):
        api.store.create_tenant(name)
    assert cli("endpoint", "create", "llama")[0] == 0
    assert cli("endpoint", "create", "acme-llama", "--owner", "acme")[0] == 0
    code, out, _ = cli("grant", "llama", "beta")
    assert code == 0 and api.store.can_use("beta", "llama")
    code, out, _ = cli("endpoint", "list")
    assert [r[:3] for r in rows(out)] == [["NAME", "OWNER", "GRANTS"],
                                          ["acme-llama", "acme", "-"],
                                          ["llama", "(shared)", "beta"]]
    code, out, _ = cli("revoke-grant", "llama", "beta", "--json")
    assert json.loads(out)["grants"] == []
    code, out, _ = cli("endpoint", "delete", "llama")
    assert (code, out) == (0, "deleted endpoint llama\n")
    assert [e.name for e in api.store.list_endpoints()] == ["acme-llama"]


def test_quota_commands(cli, api: Api) -> None:
    api.store.create_tenant("acme")
    api.store.create_endpoint("llama", owner="acme")
    code, out, _ = cli("quota", "set", "acme", "--rpm", "60", "--monthly-tokens", "1000000")
    assert code == 0
    assert rows(out) == [["quota of tenant acme"], ["LIMIT", "VALUE"],
                         ["requests_per_minute", "60"], ["tokens_per_minute", "unlimited"],
                         ["concurrent_requests", "unlimited"], ["tokens_per_month", "1000000"]]
    cli("quota", "set", "acme", "--tpm", "5000", "--monthly-tokens", "none")
    quota = api.store.get_quota("acme")
    assert (quota.requests_per_minute, quota.tokens_per_minute, quota.tokens_per_month) == (
        60, 5000, None)  # --rpm kept, --monthly-tokens none cleared

    cli("quota", "set", "acme", "--endpoint", "llama", "--concurrent", "4")
    code, out, _ = cli("quota", "show", "acme", "--endpoint", "llama", "--json")
    assert json.loads(out)["concurrent_requests"] == 4
    code, out, _ = cli("quota", "clear", "acme")
    assert (code, out) == (0, "cleared the quota of tenant acme\n")
    assert api.store.get_quota("acme").requests_per_minute is None
    assert api.store.get_quota("acme", "llama").concurrent_requests == 4


def test_usage_command(cli, api: Api) -> None:
    api.store.create_tenant("acme")
    t0 = datetime(2025, 3, 14, 9, tzinfo=UTC)
    api.store.record_usage([
        UsageRecord(f"r{i}", "acme", "afk_abcdefgh", "llama", 10, 5, None, None, outcome,
                    t0 + timedelta(minutes=40 * i), None)
        for i, outcome in enumerate([Outcome.OK, Outcome.OK, Outcome.REJECTED])])
    window = ("--since", "2025-03-14T00:00:00Z", "--until", "2025-03-15")
    code, out, _ = cli("usage", "acme", *window)
    assert code == 0
    # r0 at 09:00 and r1 at 09:40, r2 (rejected) at 10:20; 15 tokens each
    assert rows(out)[1:] == [
        ["START", "REQUESTS", "OK", "ERROR", "REJECTED", "CANCELLED", "PROMPT", "COMPLETION",
         "TOTAL"],
        ["2025-03-14 09:00:00Z", "2", "2", "0", "0", "0", "20", "10", "30"],
        ["2025-03-14 10:00:00Z", "1", "0", "0", "1", "0", "10", "5", "15"],
        ["total", "3", "2", "0", "1", "0", "30", "15", "45"]]

    code, out, _ = cli("usage", "acme", *window, "--by", "day", "--json")
    assert [b["requests"] for b in json.loads(out)["buckets"]] == [3]
    code, out, _ = cli("usage", "acme", *window, "--csv")
    assert [r["request_id"] for r in csv.DictReader(io.StringIO(out))] == ["r0", "r1", "r2"]
    code, out, _ = cli("usage", "acme")  # the last 24 hours, by default
    assert code == 0 and rows(out)[-1][:2] == ["total", "0"]


# Failures: the API's message, and an exit status scripts can act on


def test_a_refused_request_prints_the_api_message_and_exits_2(cli, api: Api) -> None:
    api.store.create_tenant("acme")
    assert cli("tenant", "create", "acme") == (2, "", "aifactory: name: tenant 'acme' exists\n")
    code, _, err = cli("key", "list", "ghost")
    assert (code, err) == (2, "aifactory: tenant: no tenant named 'ghost'\n")
    code, _, err = cli("quota", "set", "acme", "--rpm", "0")
    assert code == 2 and "requests_per_minute: must be an integer in [1, " in err
    code, _, err = cli("endpoint", "create", "..")
    assert code == 2 and "name: must match" in err  # sent as a name, not as a path


def test_mistakes_in_the_command_line_exit_2(cli, api: Api) -> None:
    assert cli("tenant", "update", "acme")[0] == 2
    assert cli("quota", "set", "acme")[0] == 2
    code, _, err = cli("usage", "acme", "--since", "yesterday")
    assert code == 2 and "'yesterday' is not a time" in err
    with pytest.raises(SystemExit) as refused:  # argparse's own check
        cli("quota", "set", "acme", "--rpm", "lots")
    assert refused.value.code == 2


def test_a_non_admin_key_is_refused(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    api.store.create_tenant("acme")
    key = api.store.create_key("acme").plaintext
    code, _, err = aifactory(capsys, "tenant", "list", "--url", api.url, "--admin-key", key)
    assert code == 2 and "the admin API needs an admin-scoped key" in err


def test_an_unreachable_platform_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = aifactory(capsys, "tenant", "list", "--url", "http://127.0.0.1:1",
                             "--admin-key", "afk_" + "A" * 32)
    assert code == 1 and "cannot reach the admin API at http://127.0.0.1:1" in err


def test_no_admin_key_anywhere_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = aifactory(capsys, "tenant", "list", "--url", "http://127.0.0.1:1")
    assert code == 2 and "no admin key" in err and "aifactory admin bootstrap" in err


def test_url_and_key_come_from_the_platform_state_env_and_key_file(
        api: Api, isolated_environment: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    isolated_environment.mkdir(parents=True, exist_ok=True)
    (isolated_environment / "platform.json").write_text(json.dumps({"url": api.url}))
    (isolated_environment / "admin.key").write_text(api.admin_key + "\n")
    assert aifactory(capsys, "tenant", "list")[0] == 0  # the state's URL, the key file's key

    other = api.store.create_key("admin", scope=KeyScope.ADMIN).plaintext
    api.store.revoke_key(1)  # the key file's key; the environment's wins anyway
    monkeypatch.setenv("AIFACTORY_ADMIN_KEY", other)
    assert aifactory(capsys, "tenant", "list")[0] == 0


@pytest.mark.parametrize(("text", "expected"), [
    ("24h", datetime(2025, 3, 13, 9, tzinfo=UTC)),  # now - 24 hours
    ("7d", datetime(2025, 3, 7, 9, tzinfo=UTC)),
    ("90m", datetime(2025, 3, 14, 7, 30, tzinfo=UTC)),
    ("2w", datetime(2025, 2, 28, 9, tzinfo=UTC)),
    ("2025-03-01", datetime(2025, 3, 1, tzinfo=UTC)),  # no zone: UTC
    ("2025-03-01T12:00:00+02:00", datetime(2025, 3, 1, 10, tzinfo=UTC)),
    ("2025-03-01T12:00:00Z", datetime(2025, 3, 1, 12, tzinfo=UTC)),
])
def test_times_are_relative_or_iso(text: str, expected: datetime) -> None:
    assert parse_moment(text, datetime(2025, 3, 14, 9, tzinfo=UTC)) == expected


@pytest.mark.parametrize("text", ["yesterday", "99999999w", "2025-13-01", ""])
def test_what_is_not_a_time_is_a_command_line_mistake(text: str) -> None:
    with pytest.raises(CliError, match="is not a time"):
        parse_moment(text, datetime(2025, 3, 14, 9, tzinfo=UTC))


@pytest.mark.parametrize(("reply", "code", "words"), [
    (httpx.Response(200, text="<html>hello</html>"), 1,
     "is not a TenantList"),
    (httpx.Response(404, json={"detail": "Not Found"}), 2, "HTTP 404 from http://elsewhere"),
    (httpx.Response(502, text="Bad Gateway"), 1, "HTTP 502 from http://elsewhere: Bad"),
])
def test_a_reply_from_something_else_is_reported(
        reply: httpx.Response, code: int, words: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    sdk_client = admin_cli.Client

    def client(**options):  # the CLI's own client, over a transport that answers `reply`
        transport = httpx.MockTransport(lambda request: reply)
        return sdk_client(**options, http_client=httpx.Client(transport=transport))

    monkeypatch.setattr(admin_cli, "Client", client)
    exit_code, _, err = aifactory(capsys, "tenant", "list", "--url", "http://elsewhere",
                                  "--admin-key", "afk_" + "A" * 32)
    assert exit_code == code and words in err and err.startswith("aifactory: ")


def test_the_cli_has_no_http_code_of_its_own() -> None:
    """Every admin command goes through the SDK: no HTTP library in the CLI's modules."""
    import ast

    for module in ("admin_cli", "admin_key", "admin_args", "admin_audit_cli", "admin_batch_cli",
                   "admin_render"):
        path = Path(admin_cli.__file__).with_name(f"{module}.py")
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & {"httpx", "urllib", "requests", "aiohttp", "http"}, path


def test_relative_expiry_points_to_the_future() -> None:
    now = datetime(2025, 3, 14, 9, tzinfo=UTC)
    assert parse_moment("90d", now, relative_to_past=False) == now + timedelta(days=90)


# admin bootstrap: the first admin key, straight into the store


def test_bootstrap_writes_a_private_working_admin_key(
        database_url: str, isolated_environment: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AIFACTORY_DATABASE_URL", database_url)
    code, out, _ = aifactory(capsys, "admin", "bootstrap")
    assert code == 0
    key_file = isolated_environment / "admin.key"
    plaintext = key_file.read_text().strip()
    assert out.splitlines()[0] == f"admin key: {plaintext}"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    store = Store(database_url)
    try:
        principal = store.authenticate(plaintext)
        assert (principal.tenant, principal.scope, principal.priority) == (
            "admin", KeyScope.ADMIN, PriorityClass.CRITICAL)

        code, _, err = aifactory(capsys, "admin", "bootstrap")
        assert code == 2 and "already holds a working admin key" in err
        assert key_file.read_text().strip() == plaintext  # untouched

        code, out, _ = aifactory(capsys, "admin", "bootstrap", "--force", "--json")
        made = json.loads(out)
        assert code == 0 and made["key"] != plaintext
        assert key_file.read_text().strip() == made["key"]
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert made["notes"] == [f"the previous key {plaintext[:12]}... still works; "
                                 "`aifactory key revoke 1` ends it"]
        assert [k.scope for k in store.list_keys("admin")] == [KeyScope.ADMIN] * 2
    finally:
        store.close()


def test_bootstrap_replaces_a_dead_key_and_revives_the_admin_tenant(
        database_url: str, isolated_environment: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AIFACTORY_DATABASE_URL", database_url)
    store = Store(database_url)
    try:
        store.create_tenant("admin")
        dead = store.create_key("admin", scope=KeyScope.ADMIN)
        store.revoke_key(dead.key.id)
        store.update_tenant("admin", status=TenantStatus.SUSPENDED)
        isolated_environment.mkdir(parents=True, exist_ok=True)
        (isolated_environment / "admin.key").write_text(dead.plaintext)
        code, out, _ = aifactory(capsys, "admin", "bootstrap")  # no --force needed
        assert code == 0 and "was suspended; it is active again" in out
        fresh = (isolated_environment / "admin.key").read_text().strip()
        assert store.authenticate(fresh).scope == KeyScope.ADMIN
    finally:
        store.close()


def test_bootstrap_reports_an_unreachable_database(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AIFACTORY_DATABASE_URL",
                       "postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2")
    code, _, err = aifactory(capsys, "admin", "bootstrap")
    assert code == 1 and "cannot open the tenancy database" in err


# ensure_admin_key: what the platform's start-up calls


def test_the_environment_key_becomes_an_admin_key(store: Store, tmp_path: Path) -> None:
    chosen = "afk_" + "k" * 32
    environ = {"AIFACTORY_ADMIN_KEY": chosen}
    assert ensure_admin_key(store, tmp_path, environ=environ) == chosen
    assert ensure_admin_key(store, tmp_path, environ=environ) == chosen  # idempotent
    principal = store.authenticate(chosen)
    assert (principal.tenant, principal.scope) == ("admin", KeyScope.ADMIN)
    assert store.get_tenant("admin").priority == PriorityClass.CRITICAL
    assert len(store.list_keys("admin")) == 1


def test_the_environment_key_registered_is_usable_on_the_api(api: Api) -> None:
    chosen = "afk_" + "e" * 32
    ensure_admin_key(api.store, Path("/nonexistent"), environ={"AIFACTORY_ADMIN_KEY": chosen})
    with api.as_key(chosen) as operator:
        assert operator.get("/tenants").status_code == 200


@pytest.mark.parametrize(("setup", "words"), [
    ("malformed", "must be 'afk_' then 32"),
    ("revoked", "is revoked; set a new one"),
    ("inference", "is registered as an inference key of tenant 'acme'"),
])
def test_an_unusable_environment_key_stops_start_up(store: Store, tmp_path: Path, setup: str,
                                                    words: str) -> None:
    if setup == "malformed":
        chosen = "letmein"
    else:
        store.create_tenant("acme")
        created = store.create_key("acme")
        chosen = created.plaintext
        if setup == "revoked":
            store.revoke_key(created.key.id)
    with pytest.raises(Invalid, match=words):
        ensure_admin_key(store, tmp_path, environ={"AIFACTORY_ADMIN_KEY": chosen})


def test_without_the_environment_key_the_key_file_is_used_if_it_works(store: Store,
                                                                     tmp_path: Path) -> None:
    assert ensure_admin_key(store, tmp_path, environ={}) is None
    store.create_tenant("admin")
    created = store.create_key("admin", scope=KeyScope.ADMIN)
    admin_key.write_key_file(tmp_path / "admin.key", created.plaintext)
    assert ensure_admin_key(store, tmp_path, environ={}) == created.plaintext
    store.revoke_key(created.key.id)
    assert ensure_admin_key(store, tmp_path, environ={}) is None
