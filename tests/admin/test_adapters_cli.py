"""Tenants' LoRA adapters through the SDK (`client.admin.adapters`, `client.tenant.adapters`)
and `aifactory adapter register|list|show|delete`, against the real routes over HTTP on
SQLite and PostgreSQL: typed results, refusals as the SDK's typed errors naming the files,
and a refused registration exiting non-zero with the gateway's message."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from aifactory_sdk import AsyncClient, BadRequestError, Client, ConflictError, NotFoundError, types

from serving.tenancy import KeyScope
from tests.admin.test_adapters_api import folders, lora  # noqa: F401 (fixtures)
from tests.admin.test_cli import cli, rows  # noqa: F401 (cli: a fixture)

if TYPE_CHECKING:
    from tests.admin.conftest import Api


@pytest.fixture
def sdk(api: Api, lora):  # noqa: F811 (the fixture)
    """SDK clients: the platform admin's, and acme's and globex's admin-scoped keys'."""
    def client(key: str) -> Client:
        return Client(api_key=key, base_url=api.url, max_retries=0, timeout=30)

    made = {"admin": client(api.admin_key)}
    for tenant in ("acme", "globex"):
        made[tenant] = client(lora.store.create_key(tenant, scope=KeyScope.ADMIN).plaintext)
    yield made
    for c in made.values():
        c.close()


def test_the_operator_sdk_calls_are_typed(sdk, lora):  # noqa: F811
    admin = sdk["admin"].admin.adapters
    made = admin.register("support", endpoint="base", path=str(lora.folders.adapter),
                          tenant="acme")
    assert isinstance(made, types.OperatorAdapter)
    assert (made.id, made.tenant, made.endpoint, made.rank, made.target_modules) == (
        "support", "acme", "base", 8, ["q_proj", "v_proj"])
    listed = admin.list(tenant="acme")
    assert isinstance(listed, types.OperatorAdapterList)
    assert [a.name for a in listed.data] == ["support"]
    assert admin.list(endpoint="private").data == []
    assert admin.retrieve("support").digest == made.digest
    gone = admin.delete("support")
    assert isinstance(gone, types.AdapterDeleted) and (gone.id, gone.deleted) == ("support",
                                                                                   True)
    with pytest.raises(NotFoundError, match="no adapter named 'support'"):
        admin.retrieve("support")


def test_the_tenant_sdk_calls_keep_to_the_tenant(sdk, lora):  # noqa: F811
    mine = sdk["acme"].tenant.adapters
    made = mine.register("support", endpoint="base", path=str(lora.folders.adapter))
    assert isinstance(made, types.Adapter) and not isinstance(made, types.OperatorAdapter)
    assert "tenant" not in made.model_dump()
    assert isinstance(mine.list(), types.AdapterList)
    assert [a.id for a in mine.list(endpoint="base").data] == ["support"]
    theirs = sdk["globex"].tenant.adapters
    assert theirs.list().data == []
    with pytest.raises(NotFoundError):
        theirs.retrieve("support")
    with pytest.raises(NotFoundError):
        theirs.delete("support")
    with pytest.raises(ConflictError):
        theirs.register("support", endpoint="base", path=str(lora.folders.adapter))
    assert mine.delete("support").deleted is True


def test_a_refusal_is_a_bad_request_naming_the_file(sdk, lora):  # noqa: F811
    with pytest.raises(BadRequestError) as refused:
        sdk["acme"].tenant.adapters.register("big", endpoint="base",
                                             path=str(lora.folders.rank16))
    assert refused.value.param == "path"
    assert "adapter_config.json: rank r=16 exceeds the endpoint's max_lora_rank 8" in \
        refused.value.message


def test_the_async_client_has_the_same_surface(api: Api, lora):  # noqa: F811
    import asyncio

    async def calls() -> tuple:
        async with AsyncClient(api_key=api.admin_key, base_url=api.url, max_retries=0,
                               timeout=30) as client:
            made = await client.admin.adapters.register(
                "support", endpoint="base", path=str(lora.folders.adapter), tenant="globex")
            listed = await client.admin.adapters.list()
            gone = await client.admin.adapters.delete("support")
            return made, listed, gone

    made, listed, gone = asyncio.run(calls())
    assert (made.tenant, [a.name for a in listed.data], gone.deleted) == (
        "globex", ["support"], True)


def test_adapter_commands(cli, lora):  # noqa: F811
    path = str(lora.folders.adapter)
    code, out, err = cli("adapter", "register", "support", "--endpoint", "base", "--path", path,
                         "--tenant", "acme")
    assert (code, err) == (0, "")
    shown = dict(line.split(":", 1) for line in out.strip().splitlines())
    assert {k: v.strip() for k, v in shown.items() if k in ("name", "tenant", "rank")} == {
        "name": "support", "tenant": "acme", "rank": "8"}
    code, out, _ = cli("adapter", "list")
    assert code == 0
    table = rows(out)
    assert table[0] == ["NAME", "TENANT", "ENDPOINT", "RANK", "TARGETS", "CREATED", "PATH"]
    assert table[1][:5] + table[1][-1:] == ["support", "acme", "base", "8", "q_proj,v_proj",
                                            path]
    code, out, _ = cli("adapter", "list", "--tenant", "globex", "--json")
    assert (code, json.loads(out)) == (0, {"object": "list", "data": []})
    code, out, _ = cli("adapter", "show", "support", "--json")
    assert json.loads(out)["path"] == path
    code, out, _ = cli("adapter", "delete", "support")
    assert (code, out.strip()) == (0, "deleted adapter support (its folder stays)")
    code, _, err = cli("adapter", "show", "support")
    assert code == 2 and "no adapter named 'support'" in err


def test_a_refused_registration_prints_the_files_and_exits_non_zero(cli, lora, tmp_path):  # noqa: F811
    from tests.unit.catalogue_files import copy_of

    broken = copy_of(lora.folders.adapter, tmp_path)
    (broken / "adapter_model.safetensors").unlink()
    code, out, err = cli("adapter", "register", "support", "--endpoint", "plain", "--path",
                         str(broken), "--tenant", "acme")
    assert (code, out) == (2, "")
    assert err.strip() == (
        f"aifactory: path: adapter folder {broken} refused: (1) adapter_model.safetensors: is "
        "missing (2) adapter_config.json: the endpoint does not enable LoRA (no max_lora_rank)")
    assert cli("adapter", "list", "--json")[1] == '{\n  "object": "list",\n  "data": []\n}\n'


def test_the_default_tenant_is_the_embedded_platforms(cli, lora):  # noqa: F811
    lora.store.create_tenant("default")
    lora.store.grant("base", "default")
    code, out, err = cli("adapter", "register", "mine", "--endpoint", "base", "--path",
                         str(lora.folders.adapter), "--json")
    assert code == 0, err
    assert json.loads(out)["tenant"] == "default"
