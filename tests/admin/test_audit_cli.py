"""`aifactory audit` against the live admin API: the table, the JSON lines and CSV exports
(every page), its filters, and no key in any of them."""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING

import pytest

from deployments import admin_audit_cli
from serving.tenancy import keys
from tests.admin.test_cli import aifactory, rows

if TYPE_CHECKING:
    from tests.admin.conftest import Api


@pytest.fixture
def cli(api: Api, capsys: pytest.CaptureFixture[str]):
    def run(*argv: str) -> tuple[int, str, str]:
        return aifactory(capsys, *argv, "--url", api.url, "--admin-key", api.admin_key)

    return run


def succeeded(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, err
    return out


@pytest.fixture
def changes(api: Api) -> list[dict]:
    """Four entries through the API: acme made, its quota set then changed, beta made."""
    api.client.post("/tenants", json={"name": "acme"})
    api.client.put("/tenants/acme/quota", json={"requests_per_minute": 60})
    api.client.put("/tenants/acme/quota", json={"requests_per_minute": 120})
    api.client.post("/tenants", json={"name": "beta"})
    return api.client.get("/audit").json()["data"]


def test_the_table_says_who_did_what_when_from_where(cli, api: Api, changes: list[dict]) -> None:
    code, out, _ = cli("audit")
    assert code == 0
    table = rows(out)
    assert table[0] == ["ID", "AT", "ACTOR", "FROM", "ACTION", "TARGET", "CHANGE"]
    assert [r[0] for r in table[1:]] == ["1", "2", "3", "4"]
    third = out.strip().splitlines()[3]
    for words in (f"admin/{api.admin_key[:12]} (admin)", "127.0.0.1", "quota.set",
                  "tenant/acme/quota",
                  '{"requests_per_minute":60} -> {"requests_per_minute":120}'):
        assert words in third


def test_jsonl_exports_every_entry_as_the_api_gives_it(cli, changes: list[dict]) -> None:
    code, out, _ = cli("audit", "--format", "jsonl")
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == changes


def test_csv_exports_every_entry_with_json_before_and_after(cli, changes: list[dict]) -> None:
    code, out, _ = cli("audit", "--format", "csv")
    assert code == 0
    exported = list(csv.DictReader(io.StringIO(out)))
    assert list(exported[0]) == list(admin_audit_cli.CSV_COLUMNS)
    assert [r["action"] for r in exported] == [e["action"] for e in changes]
    change = exported[2]
    assert (change["target"], change["tenant"], change["source_address"]) == (
        "tenant/acme/quota", "acme", "127.0.0.1")
    assert json.loads(change["before"]) == {"requests_per_minute": 60}
    assert json.loads(change["after"]) == {"requests_per_minute": 120}
    assert exported[0]["before"] == ""  # nothing before a create


def test_exports_read_every_page(cli, changes: list[dict],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_audit_cli, "PAGE_SIZE", 3)  # 4 entries: two pages
    out = succeeded(cli("audit", "--format", "jsonl"))
    assert [json.loads(line)["id"] for line in out.splitlines()] == [1, 2, 3, 4]
    code, out, err = cli("audit", "--limit", "2")
    assert code == 0
    assert [r[0] for r in rows(out)[1:]] == ["1", "2"] and "more match" in err
    out = succeeded(cli("audit", "--format", "csv", "--limit", "3"))
    assert len(list(csv.DictReader(io.StringIO(out)))) == 3


def test_filters(cli, api: Api, changes: list[dict]) -> None:
    out = succeeded(cli("audit", "--tenant", "beta", "--format", "jsonl"))
    assert [json.loads(line)["target"] for line in out.splitlines()] == ["tenant/beta"]
    out = succeeded(cli("audit", "--since", "1h", "--json"))
    assert len(json.loads(out)["data"]) == 4
    out = succeeded(cli("audit", "--until", "1h", "--json"))
    assert json.loads(out)["data"] == []


def test_refusals_exit_2_with_the_apis_words(cli, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli("audit", "--tenant", "Not A Name")
    assert code == 2 and "tenant: must match" in err
    with pytest.raises(SystemExit) as refused:
        cli("audit", "--limit", "0")
    assert refused.value.code == 2
    assert "1 or more" in capsys.readouterr().err


def test_no_export_holds_a_key(cli, api: Api) -> None:
    api.client.post("/tenants", json={"name": "acme"})
    created = api.client.post("/tenants/acme/keys", json={}).json()
    for form in ("table", "jsonl", "csv"):
        code, out, _ = cli("audit", "--format", form)
        assert code == 0 and created["prefix"] in out
        assert created["key"] not in out and keys.key_hash(created["key"]) not in out
