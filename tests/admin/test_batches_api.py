"""Batch jobs as operators see them, over real HTTP on SQLite and PostgreSQL: the platform's
admins list every tenant's batches (by tenant, by status, page by page) and cancel any, each
cancel in the audit log; a tenant's admin-scoped key sees and cancels its own only (another
tenant's batch is as missing as one never made); hostile ids and queries are 4xx in OpenAI's
shape; and `aifactory batch list|cancel` on the same routes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import pytest

from serving.batch import batch_store as batches
from serving.batch.batch_input import BatchLine, LineError
from serving.batch.lifecycle import BatchStatus
from serving.tenancy import KeyScope, audit
from tests.admin.test_api import error_of
from tests.admin.test_cli import rows

if TYPE_CHECKING:
    from tests.admin.conftest import Api
    from tests.manual_clock import Clock


def submit(api: Api, tenant: str, lines: int = 2, *, bad: bool = False) -> batches.Batch:
    """A batch of `tenant`'s, as the Batch API makes one; `bad`: failed in validation."""
    return batches.create(
        api.store, tenant=tenant, key_prefix=f"afk_{tenant[:8]:_<8}",
        endpoint="/v1/chat/completions", input_file_id="file-x",
        lines=[BatchLine(i, f"q{i}", {"model": "demo", "messages": []})
               for i in range(1, lines + 1)],
        errors=[LineError("duplicate_custom_id", "custom_id q1 again", 2, "custom_id")] if bad
        else [])


@pytest.fixture
def made(api: Api, clock: Clock) -> dict[str, batches.Batch]:
    """acme's two batches (one failed in validation) and globex's one, a second apart:
    newest first they are globex's, acme's failed one, acme's running one."""
    for name in ("acme", "globex"):
        api.store.create_tenant(name)
    found = {}
    for label, tenant, bad in (("acme", "acme", False), ("acme_bad", "acme", True),
                               ("globex", "globex", False)):
        found[label] = submit(api, tenant, bad=bad)
        clock.advance(seconds=1)
    return found


def ids(page: dict) -> list[str]:
    return [b["id"] for b in page["data"]]


def tenant_client(api: Api, tenant: str, scope: KeyScope) -> httpx.Client:
    key = api.store.create_key(tenant, scope=scope).plaintext
    return httpx.Client(base_url=f"{api.url}/tenant/v1", timeout=10,
                        headers={"Authorization": f"Bearer {key}"})


def test_an_operator_lists_every_tenants_batches_newest_first(api: Api, made) -> None:
    page = api.client.get("/batches").json()
    assert ids(page) == [made["globex"].id, made["acme_bad"].id, made["acme"].id]
    assert (page["first_id"], page["last_id"], page["has_more"]) == (
        made["globex"].id, made["acme"].id, False)
    globex = page["data"][0]
    assert (globex["tenant"], globex["key_prefix"], globex["object"]) == (
        "globex", "afk_globex__", "batch")
    assert globex["request_counts"] == {"total": 2, "completed": 0, "failed": 0}
    assert page["data"][1]["errors"]["data"][0]["code"] == "duplicate_custom_id"

    assert ids(api.client.get("/batches", params={"tenant": "acme"}).json()) == [
        made["acme_bad"].id, made["acme"].id]
    assert ids(api.client.get("/batches", params={"status": "failed"}).json()) == [
        made["acme_bad"].id]
    assert ids(api.client.get("/batches", params={"tenant": "globex",
                                                  "status": "failed"}).json()) == []
    first = api.client.get("/batches", params={"limit": 2}).json()
    assert (ids(first), first["has_more"]) == ([made["globex"].id, made["acme_bad"].id], True)
    rest = api.client.get("/batches", params={"limit": 2, "after": first["last_id"]}).json()
    assert (ids(rest), rest["has_more"]) == ([made["acme"].id], False)
    assert api.client.get(f"/batches/{made['acme'].id}").json()["tenant"] == "acme"


def test_an_operator_cancels_any_tenants_batch_and_the_log_says_who(api: Api, made) -> None:
    cancelled = api.client.post(f"/batches/{made['globex'].id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["tenant"]) == ("cancelling", "globex")
    assert batches.find(api.store, "globex", made["globex"].id).status is BatchStatus.CANCELLING
    [entry] = audit.read(api.store.engine, audit.AuditQuery(tenant="globex")).entries
    assert (entry.action, entry.target, entry.actor_tenant) == (
        "batch.cancel", f"batch/{made['globex'].id}", "admin")
    assert (entry.before, entry.after) == ({"status": "in_progress"}, {"status": "cancelling"})

    again = api.client.post(f"/batches/{made['globex'].id}/cancel")  # the same answer, no entry
    assert again.json()["status"] == "cancelling"
    finished = error_of(api.client.post(f"/batches/{made['acme_bad'].id}/cancel"), 400)
    assert finished["param"] == "batch_id" and "failed cannot be cancelled" in finished["message"]
    assert len(audit.read(api.store.engine, audit.AuditQuery()).entries) == 1


def test_a_tenants_admin_key_sees_and_cancels_its_own_batches_only(api: Api, made) -> None:
    acme_admin = tenant_client(api, "acme", KeyScope.ADMIN)
    page = acme_admin.get("/batches").json()
    assert ids(page) == [made["acme_bad"].id, made["acme"].id]
    assert "globex" not in acme_admin.get("/batches").text
    theirs = made["globex"].id
    for reply in (acme_admin.get(f"/batches/{theirs}"),
                  acme_admin.post(f"/batches/{theirs}/cancel")):
        assert error_of(reply, 404)["code"] == "not_found"
    assert batches.find(api.store, "globex", theirs).status is BatchStatus.IN_PROGRESS
    # Nor does naming the other tenant, or a cursor of its batches, show anything.
    error_of(acme_admin.get("/batches", params={"tenant": "globex"}), 400)
    assert ids(acme_admin.get("/batches", params={"after": theirs}).json()) == []

    assert acme_admin.post(f"/batches/{made['acme'].id}/cancel").json()["status"] == (
        "cancelling")
    [entry] = acme_admin.get("/audit").json()["data"]
    assert (entry["action"], entry["actor_tenant"]) == ("batch.cancel", "acme")

    inference = tenant_client(api, "acme", KeyScope.INFERENCE)
    assert error_of(inference.get("/batches"), 403)["code"] == "insufficient_permissions"
    error_of(inference.post(f"/batches/{made['acme_bad'].id}/cancel"), 403)
    # The admin API itself stays the platform's: a tenant's admin key is refused there.
    error_of(api.as_key(acme_admin.headers["authorization"].removeprefix("Bearer "))
             .get(f"{api.url}/admin/v1/batches"), 403)


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/batches/batch_nope", 404),
    ("GET", "/batches/batch_" + "0" * 32, 404),  # well formed, never made
    ("GET", "/batches/%2E%2E", 404),  # as the SDK sends ".." (a path would lose it)
    ("GET", "/batches/" + "b" * 5000, 404),
    ("POST", "/batches/" + "b" * 5000 + "/cancel", 404),
    ("POST", "/batches/batch_%00/cancel", 404),
    ("POST", "/batches/%2E%2E/cancel", 404),
    ("GET", "/batches?limit=0", 400),
    ("GET", "/batches?limit=101", 400),
    ("GET", "/batches?limit=x", 400),
    ("GET", "/batches?limit=99999999999999999999999", 400),
    ("GET", "/batches?status=bogus", 400),
    ("GET", "/batches?after=../x", 400),
    ("GET", "/batches?after=" + "a" * 5000, 400),
    ("GET", "/batches?tenant=../etc", 400),
    ("GET", "/batches?tenant=" + "t" * 5000, 400),
    ("GET", "/batches?tenant=nobody", 404),
    ("GET", "/batches?colour=red", 400),
])
def test_hostile_ids_and_queries_are_openai_shaped_4xx(api: Api, made, method, path,
                                                       status) -> None:
    reply = api.client.request(method, api.client.base_url.join("/admin/v1" + path))
    error = error_of(reply, status)
    assert len(error["message"]) < 400
    assert api.client.get("/batches").status_code == 200  # and service goes on


# The CLI, on the same routes


@pytest.fixture
def cli(api: Api, capsys: pytest.CaptureFixture[str]):
    from tests.admin.test_cli import aifactory

    def run(*argv: str) -> tuple[int, str, str]:
        return aifactory(capsys, *argv, "--url", api.url, "--admin-key", api.admin_key)

    return run


def test_the_cli_lists_and_cancels_batches(cli, api: Api, made) -> None:
    code, out, _ = cli("batch", "list")
    assert code == 0
    table = rows(out)
    assert table[0] == ["ID", "TENANT", "STATUS", "ENDPOINT", "LINES", "CREATED", "KEY"]
    assert [r[:3] for r in table[1:]] == [[made["globex"].id, "globex", "in_progress"],
                                         [made["acme_bad"].id, "acme", "failed"],
                                         [made["acme"].id, "acme", "in_progress"]]
    assert table[1][4] == "0/2 ok"
    code, out, _ = cli("batch", "list", "--tenant", "acme", "--status", "in_progress", "--json")
    assert code == 0 and ids(json.loads(out)) == [made["acme"].id]
    code, out, err = cli("batch", "list", "--limit", "1")
    assert (code, len(rows(out))) == (0, 2) and "more match" in err

    code, out, _ = cli("batch", "cancel", made["acme"].id)
    assert code == 0 and rows(out)[1][:3] == [made["acme"].id, "acme", "cancelling"]
    assert batches.find(api.store, "acme", made["acme"].id).status is BatchStatus.CANCELLING
    code, _, err = cli("batch", "cancel", made["acme_bad"].id)
    assert code == 2 and "failed cannot be cancelled" in err
    code, _, err = cli("batch", "cancel", "batch_nope")
    assert code == 2 and "no batch with id" in err
    code, _, err = cli("batch", "list", "--tenant", "nobody")
    assert code == 2 and "nobody" in err
