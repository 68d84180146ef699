"""Tenants' LoRA adapters over real HTTP on SQLite and PostgreSQL: the platform's admins
register, list, show and delete any tenant's (/admin/v1/adapters); a tenant its own
(/tenant/v1/adapters), where another tenant's adapter answers exactly as a missing one.
A folder that cannot be served on the endpoint is refused with every file and reason named,
and nothing is stored; names are one model id platform-wide; hostile inputs are 4xx in
OpenAI's error shape."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi import FastAPI

from serving.admin import build_admin_router, build_tenant_router
from serving.tenancy import KeyScope, audit
from tests.admin.test_api import error_of
from tests.unit import catalogue_files

if TYPE_CHECKING:
    from tests.admin.conftest import Api


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return SimpleNamespace(
        model=catalogue_files.demo_model(tmp_path_factory),
        adapter=catalogue_files.demo_adapter(tmp_path_factory),
        rank16=catalogue_files.demo_adapter(tmp_path_factory, rank=16),
        other=catalogue_files.adapter_for_other_base(tmp_path_factory))


@pytest.fixture
def lora(api: Api, live_server, folders) -> SimpleNamespace:
    """The admin and tenant routers with endpoint cards over the demo model: `base` takes
    adapters up to rank 8 (granted to acme and globex), `plain` has no LoRA (granted to
    acme), `private` takes adapters (granted to acme only). Clients: the admin's, acme's
    admin and inference keys', globex's admin key's."""
    cards = {
        "base": {"root": str(folders.model), "max_model_len": 2048,
                 "lora": {"max_lora_rank": 8, "max_loras": 2}},
        "plain": {"root": str(folders.model), "max_model_len": 2048, "lora": None},
        "private": {"root": str(folders.model), "max_lora_rank": 8},
    }

    async def endpoint_card(name: str):
        if name == "asleep":
            raise ConnectionError("the engine is away")
        return cards.get(name)

    app = FastAPI()
    app.include_router(build_admin_router(api.store, clock=api.clock,
                                          endpoint_card=endpoint_card), prefix="/admin/v1")
    app.include_router(build_tenant_router(api.store, clock=api.clock,
                                           endpoint_card=endpoint_card), prefix="/tenant/v1")
    live_server.app = app
    store = api.store
    for tenant in ("acme", "globex"):
        store.create_tenant(tenant)
    for endpoint, tenants in (("base", ("acme", "globex")), ("plain", ("acme",)),
                              ("private", ("acme",))):
        store.create_endpoint(endpoint)
        for tenant in tenants:
            store.grant(endpoint, tenant)

    def client(tenant: str, scope: KeyScope) -> httpx.Client:
        key = store.create_key(tenant, scope=scope).plaintext
        return httpx.Client(base_url=f"{api.url}/tenant/v1", timeout=30,
                            headers={"Authorization": f"Bearer {key}"})

    clients = SimpleNamespace(admin=api.client, acme=client("acme", KeyScope.ADMIN),
                              acme_inference=client("acme", KeyScope.INFERENCE),
                              globex=client("globex", KeyScope.ADMIN), folders=folders,
                              store=store)
    yield clients
    for c in (clients.acme, clients.acme_inference, clients.globex):
        c.close()


def register(c: httpx.Client, path, name="support", endpoint="base", **more) -> httpx.Response:
    return c.post("/adapters", json={"name": name, "endpoint": endpoint, "path": str(path),
                                     **more})


def adapter_actions(lora) -> list[str]:
    return [e.action for e in audit.read(lora.store.engine, audit.AuditQuery()).entries
            if e.action.startswith("adapter.")]


def test_an_operator_registers_lists_shows_and_deletes(lora, api):
    made = register(lora.admin, lora.folders.adapter, tenant="acme")
    assert made.status_code == 201, made.text
    body = made.json()
    digest = body.pop("digest")
    assert digest.startswith("sha256:") and len(digest) == 71
    assert body == {"object": "adapter", "id": "support", "name": "support",
                    "endpoint": "base", "tenant": "acme", "path": str(lora.folders.adapter),
                    "rank": 8, "base_model": body["base_model"],
                    "target_modules": ["q_proj", "v_proj"],
                    "created_at": int(api.clock.now.timestamp())}
    assert body["base_model"] == str(lora.folders.model)  # as peft recorded it
    assert register(lora.admin, lora.folders.adapter, name="globex-one",
                    tenant="globex").status_code == 201

    def names(**query) -> list[str]:
        page = lora.admin.get("/adapters", params=query)
        assert page.status_code == 200, page.text
        assert page.json()["object"] == "list"
        return [a["name"] for a in page.json()["data"]]

    assert names() == ["globex-one", "support"]
    assert names(tenant="acme") == ["support"]
    assert names(endpoint="base", tenant="globex") == ["globex-one"]
    assert names(endpoint="private") == []
    assert error_of(lora.admin.get("/adapters", params={"tenant": "nobody"}), 404)[
        "message"] == "tenant: no tenant named 'nobody'"
    shown = lora.admin.get("/adapters/support").json()
    assert (shown["tenant"], shown["digest"]) == ("acme", digest)

    gone = lora.admin.delete("/adapters/support")
    assert gone.json() == {"object": "adapter", "id": "support", "deleted": True}
    assert error_of(lora.admin.get("/adapters/support"), 404)["message"] == \
        "name: no adapter named 'support'"
    assert names() == ["globex-one"]
    assert adapter_actions(lora) == ["adapter.create", "adapter.create", "adapter.delete"]


def test_a_tenant_manages_its_own_with_an_admin_key(lora):
    made = register(lora.acme, lora.folders.adapter)
    assert made.status_code == 201, made.text
    assert "tenant" not in made.json() and made.json()["endpoint"] == "base"
    # Any key of the tenant reads; writes need an admin-scoped key.
    listed = lora.acme_inference.get("/adapters").json()["data"]
    assert [a["name"] for a in listed] == ["support"] and "tenant" not in listed[0]
    assert lora.acme_inference.get("/adapters/support").json()["id"] == "support"
    assert error_of(lora.acme_inference.delete("/adapters/support"), 403)["code"] == \
        "insufficient_permissions"
    assert error_of(register(lora.acme_inference, lora.folders.adapter, name="more"), 403)
    # The tenant is the caller's: naming one is refused, not obeyed.
    assert error_of(register(lora.acme, lora.folders.adapter, name="x", tenant="globex"), 400)
    assert lora.acme.delete("/adapters/support").json()["deleted"] is True
    assert lora.acme.get("/adapters").json()["data"] == []
    entries = [e for e in audit.read(lora.store.engine, audit.AuditQuery()).entries
               if e.action.startswith("adapter.")]
    assert [(e.action, e.actor_tenant, e.tenant) for e in entries] == [
        ("adapter.create", "acme", "acme"), ("adapter.delete", "acme", "acme")]


def test_another_tenants_adapter_is_as_missing_as_one_never_made(lora):
    assert register(lora.acme, lora.folders.adapter).status_code == 201
    for method in ("GET", "DELETE"):
        theirs = error_of(lora.globex.request(method, "/adapters/support"), 404)
        missing = error_of(lora.globex.request(method, "/adapters/suppory"), 404)
        assert theirs == {**missing, "message": missing["message"].replace("suppory",
                                                                           "support")}
    assert lora.globex.get("/adapters").json()["data"] == []
    assert lora.globex.get("/adapters", params={"endpoint": "base"}).json()["data"] == []
    # Nor can globex shadow it: the name is taken, and whose it is is not told.
    taken = error_of(register(lora.globex, lora.folders.adapter), 409)
    assert "acme" not in taken["message"]
    assert taken["message"] == "name: 'support' is taken by another model; pick another name"
    # An endpoint globex may not call is as missing as one that does not exist.
    private = error_of(register(lora.globex, lora.folders.adapter, name="g", endpoint="private"),
                       404)
    nowhere = error_of(register(lora.globex, lora.folders.adapter, name="g", endpoint="nowhr"),
                       404)
    assert private["message"] == nowhere["message"].replace("nowhr", "private")
    assert lora.acme.get("/adapters/support").status_code == 200  # untouched
    assert adapter_actions(lora) == ["adapter.create"]


@pytest.mark.parametrize(("which", "endpoint", "names"), [
    ("missing_weights", "base", ["adapter_model.safetensors: is missing"]),
    ("rank16", "base", ["adapter_config.json: rank r=16 exceeds the endpoint's max_lora_rank 8"]),
    ("other", "base", ["adapter_model.safetensors: 6 tensor(s) do not fit the endpoint's model"]),
    ("adapter", "plain", ["adapter_config.json: the endpoint does not enable LoRA"]),
    ("missing_weights", "plain", ["adapter_model.safetensors: is missing",
                                  "adapter_config.json: the endpoint does not enable LoRA"]),
])
@pytest.mark.parametrize("route", ["admin", "tenant"])
def test_a_folder_that_cannot_be_served_is_refused_and_nothing_stored(
        lora, tmp_path, which, endpoint, names, route):
    if which == "missing_weights":
        path = catalogue_files.copy_of(lora.folders.adapter, tmp_path)
        (path / "adapter_model.safetensors").unlink()
    else:
        path = getattr(lora.folders, which)
    if route == "admin":
        refused = register(lora.admin, path, endpoint=endpoint, tenant="acme")
    else:
        refused = register(lora.acme, path, endpoint=endpoint)
    error = error_of(refused, 400)
    assert error["param"] == "path"
    assert error["message"].startswith(f"path: adapter folder {path} refused: ")
    for number, reason in enumerate(names, 1):  # every problem, no other
        assert f"({number}) {reason}" in error["message"]
    assert f"({len(names) + 1}) " not in error["message"]
    assert lora.admin.get("/adapters").json()["data"] == []
    assert adapter_actions(lora) == []


def test_names_are_one_model_id_with_endpoints(lora, api):
    assert error_of(register(lora.acme, lora.folders.adapter, name="base"), 409)
    assert register(lora.acme, lora.folders.adapter).status_code == 201
    assert error_of(register(lora.admin, lora.folders.adapter, tenant="globex"), 409)
    assert error_of(lora.admin.post("/endpoints", json={"name": "support"}), 409)
    # The base endpoint stays while an adapter runs on it.
    refused = error_of(lora.admin.delete("/endpoints/base"), 409)
    assert "1 LoRA adapter(s)" in refused["message"]
    assert lora.admin.get("/endpoints/base").status_code == 200
    assert lora.admin.delete("/adapters/support").status_code == 200
    assert lora.admin.delete("/endpoints/base").status_code == 200


def test_an_unknown_tenant_an_endpoint_without_a_card_or_one_that_cannot_say(lora):
    assert error_of(register(lora.admin, lora.folders.adapter, tenant="nobody"), 404)[
        "message"] == "tenant: no tenant named 'nobody'"
    lora.store.create_endpoint("cardless")
    lora.store.grant("cardless", "acme")
    assert error_of(register(lora.acme, lora.folders.adapter, endpoint="cardless"), 404)[
        "message"] == "endpoint: no endpoint named 'cardless'"
    lora.store.create_endpoint("asleep")
    lora.store.grant("asleep", "acme")
    assert error_of(register(lora.acme, lora.folders.adapter, endpoint="asleep"), 503)[
        "message"] == "endpoint 'asleep' cannot give its card now (ConnectionError); retry " \
                      "shortly"
    assert lora.admin.get("/adapters").json()["data"] == []


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"name": "a" * 300}, 400, "name"),
    ({"name": "Support Desk"}, 400, "name: must match"),
    ({"name": "sup\u0000port"}, 400, "name: must match"),
    ({"name": "sup/port"}, 400, "name: must match"),
    ({"name": 5}, 400, "body.name"),
    ({"endpoint": ["base"]}, 400, "body.endpoint"),
    ({"endpoint": "../base"}, 400, "endpoint: must match"),
    ({"path": None}, 400, "body.path"),
    ({"path": "adapters/support"}, 400, "path: must be absolute"),
    ({"path": "/data/sup\u0000port"}, 400, "NUL or another control character"),
    ({"path": "/" + "a" * 5000}, 400, "at most 4096"),
    ({"path": "/nonexistent/adapter"}, 400, "(folder): /nonexistent/adapter does not exist"),
    ({"path": "FILE"}, 400, "is not a directory"),
    ({"extra": 1}, 400, "body.extra"),
    ({"name": "x" * 70_000}, 413, "larger than 65536 bytes"),
])
def test_hostile_registrations_are_clear_4xx(lora, body, status, says):
    fields = {"name": "support", "endpoint": "base", "path": str(lora.folders.adapter), **body}
    if fields["path"] == "FILE":
        fields["path"] = str(lora.folders.adapter / "adapter_config.json")
    for client, more in ((lora.acme, {}), (lora.admin, {"tenant": "acme"})):
        error = error_of(client.post("/adapters", json={**fields, **more}), status)
        assert says in error["message"], error
    assert lora.admin.get("/adapters").json()["data"] == []


@pytest.mark.parametrize(("content", "says"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b"{}", "body.name: Field required"),
])
def test_malformed_bodies_are_400(lora, content, says):
    for client in (lora.acme, lora.admin):
        error = error_of(client.post("/adapters", content=content,
                                     headers={"Content-Type": "application/json"}), 400)
        assert says in error["message"]


@pytest.mark.parametrize("name", ["%00", "a" * 5000, "Support", "a..b", "%E2%80%AE"])
def test_odd_names_in_the_url_are_404_not_errors(lora, name):
    for client, says in ((lora.acme, "name: your tenant has no adapter of that name"),
                         (lora.admin, "name: no adapter named")):
        for method in ("GET", "DELETE"):
            assert error_of(client.request(method, f"/adapters/{name}"), 404)["message"] \
                .startswith(says)


def test_odd_filters_are_400(lora):
    for client, field in ((lora.admin, "tenant"), (lora.admin, "endpoint"),
                          (lora.acme, "endpoint")):
        error = error_of(client.get("/adapters", params={field: "Not A Name"}), 400)
        assert error["message"].startswith(f"{field}: must match")
