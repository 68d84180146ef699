"""The model catalogue over real HTTP on SQLite and PostgreSQL, checked against the installed
vLLM's architectures and transformers' tokenizer loading: a folder that would not serve is
refused with every file and reason and nothing is stored; a registered model shows its
facts and sizing; one an endpoint was created from is not deleted; hostile input is a 4xx
in OpenAI's shape. And `aifactory model register|list|show|delete` on the same routes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI

from serving.admin import build_admin_router
from serving.admin.catalogue_models import CatalogueSettings
from serving.catalogue.model_checks import installed_checks
from serving.tenancy import audit
from tests.admin.test_api import error_of
from tests.admin.test_cli import rows
from tests.unit.catalogue_files import copy_of, demo_model, edit_json, sharded_demo_model

if TYPE_CHECKING:
    from tests.admin.conftest import Api, LiveServer

GIB = 1024**3
DEVICES = {"cpu": 2 * GIB, "gpu": 80 * GIB}


@pytest.fixture(scope="session")
def checks():
    made = installed_checks()
    made.architectures()  # vLLM imported once, up front
    return made


@pytest.fixture
def models(api: Api, live_server: LiveServer, checks):
    """The admin API of `api`'s store with the catalogue sized for 2 GiB CPU slots and
    80 GiB GPUs: a client for it."""
    app = FastAPI()
    app.include_router(build_admin_router(api.store, clock=api.clock, catalogue=(
        CatalogueSettings(checks, lambda: dict(DEVICES)))), prefix="/admin/v1")
    live_server.app = app
    return api.client


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    return demo_model(tmp_path_factory)


def audit_actions(api: Api) -> list[tuple[str, str]]:
    entries = audit.read(api.store.engine, audit.AuditQuery(limit=audit.MAX_LIMIT)).entries
    return [(e.action, e.target) for e in entries]


def nothing_stored(api: Api, models) -> None:
    assert models.get("/models").json()["data"] == []
    assert audit_actions(api) == []


def test_registering_the_demo_model_shows_its_facts_and_sizing(api, models, demo):
    made = models.post("/models", json={"name": "demo-ft", "path": str(demo),
                                        "version": "v1"})
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["object"], body["name"], body["owner"], body["source"], body["version"]) == (
        "catalogue.model", "demo-ft", None, str(demo.resolve()), "v1")
    assert (body["architecture"], body["parameter_count"], body["dtype"],
            body["context_length"], body["has_tokenizer"], body["has_chat_template"]) == (
        "LlamaForCausalLM", 426_624, "bfloat16", 2048, True, True)
    assert body["digest"].startswith("sha256:") and len(body["digest"]) == 71
    sizing = body["sizing"]
    # 2,048 tokens x 8 sequences x 512 bytes = 8 MiB of KV cache, plus 853,248 of weights.
    assert (sizing["context_length"], sizing["concurrency"]) == (2048, 8)
    assert sizing["memory"]["total_bytes"] == 853_248 + 2048 * 8 * 512
    by_kind = {p["accelerator"]: p for p in sizing["proposals"]}
    # 209 copies would fit a 2 GiB slot's memory; a CPU engine computes on whole cores.
    assert (by_kind["cpu"]["copies_per_device"], by_kind["cpu"]["accelerators_per_replica"]) \
        == (1, 1.0)
    assert by_kind["gpu"]["fits"] and by_kind["gpu"]["tensor_parallel_size"] == 1
    listed = models.get("/models").json()["data"]
    assert [m["name"] for m in listed] == ["demo-ft"] and listed[0]["sizing"] is None
    assert audit_actions(api) == [("catalogue_model.create", "catalogue_model/demo-ft")]
    [entry] = audit.read(api.store.engine, audit.AuditQuery()).entries
    assert entry.after == {"owner": None, "source": str(demo.resolve()), "version": "v1",
                           "digest": body["digest"]}


def test_show_sizes_for_the_context_and_concurrency_asked(models, demo):
    models.post("/models", json={"name": "demo-ft", "path": str(demo)})
    sizing = models.get("/models/demo-ft", params={"max_model_len": 1024,
                                                   "concurrency": 2}).json()["sizing"]
    assert sizing["memory"]["kv_cache_bytes"] == 1024 * 2 * 512
    too_long = models.get("/models/demo-ft", params={"max_model_len": 4096}).json()["sizing"]
    assert too_long["memory"] is None and too_long["proposals"] == []
    assert "context length 4096 exceeds the model's 2048" in too_long["error"]


def test_a_missing_shard_is_refused_naming_it_and_nothing_is_stored(api, models, tmp_path,
                                                                    tmp_path_factory):
    folder = copy_of(sharded_demo_model(tmp_path_factory), tmp_path)
    (folder / "model-00002-of-00002.safetensors").unlink()
    error = error_of(models.post("/models", json={"name": "broken", "path": str(folder)}),
                     400)
    assert error["param"] == "path"
    assert ("model-00002-of-00002.safetensors: is named by model.safetensors.index.json but "
            "missing") in error["message"]
    nothing_stored(api, models)


def test_an_unsupported_architecture_is_refused_naming_config_json(api, models, demo, tmp_path):
    folder = copy_of(demo, tmp_path)
    edit_json(folder / "config.json", architectures=["TotallyNewForCausalLM"])
    error = error_of(models.post("/models", json={"name": "new", "path": str(folder)}), 400)
    assert ("config.json: architecture TotallyNewForCausalLM is not supported by the "
            "installed vLLM") in error["message"]
    nothing_stored(api, models)


def test_a_tokenizer_that_does_not_load_is_refused_naming_its_file(api, models, demo, tmp_path):
    folder = copy_of(demo, tmp_path)
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": 7}))
    error = error_of(models.post("/models", json={"name": "tok", "path": str(folder)}), 400)
    assert "tokenizer.json: the tokenizer does not load (" in error["message"]
    nothing_stored(api, models)


def test_the_digest_given_must_match(api, models, demo):
    wrong = "sha256:" + "0" * 64
    error = error_of(models.post("/models", json={"name": "pinned", "path": str(demo),
                                                  "digest": wrong}), 400)
    assert "(folder): content digest sha256:" in error["message"]
    assert f"does not match the expected {wrong}" in error["message"]
    nothing_stored(api, models)
    made = models.post("/models", json={"name": "unpinned", "path": str(demo)}).json()
    models.delete("/models/unpinned")
    again = models.post("/models", json={"name": "pinned", "path": str(demo),
                                         "digest": made["digest"].upper().replace("SHA256",
                                                                                  "sha256")})
    assert again.status_code == 201 and again.json()["digest"] == made["digest"]


def test_an_owned_model_needs_its_tenant(api, models, demo):
    assert error_of(models.post("/models", json={"name": "m", "path": str(demo),
                                                 "owner": "acme"}), 404)["param"] is None
    api.store.create_tenant("acme")
    assert models.post("/models", json={"name": "m", "path": str(demo),
                                        "owner": "acme"}).json()["owner"] == "acme"
    assert [m["name"] for m in models.get("/models", params={"owner": "acme"}).json()[
        "data"]] == ["m"]
    assert error_of(models.post("/models", json={"name": "m", "path": str(demo)}), 409)


def test_delete_is_refused_while_an_endpoint_uses_the_model(api, models, demo):
    models.post("/models", json={"name": "demo-ft", "path": str(demo)})
    api.store.create_endpoint("chat", deployment={"model": str(demo), "catalogue": "demo-ft"})
    error = error_of(models.delete("/models/demo-ft"), 409)
    assert "used by endpoint(s) chat" in error["message"]
    assert models.get("/models/demo-ft").status_code == 200
    api.store.delete_endpoint("chat")
    assert models.delete("/models/demo-ft").json() == {
        "object": "catalogue.model", "name": "demo-ft", "deleted": True}
    assert error_of(models.get("/models/demo-ft"), 404)["code"] == "not_found"


@pytest.mark.parametrize("body, status, words", [
    ({"name": "x" * 64, "path": "/tmp"}, 400, "name: must match"),
    ({"name": "x" * 300, "path": "/tmp"}, 400, "body.name"),
    ({"name": "bad\u0000name", "path": "/tmp"}, 400, "name: must match"),
    ({"name": "../etc", "path": "/tmp"}, 400, "name: must match"),
    ({"name": "ok", "path": "relative/folder"}, 400, "path: must be absolute"),
    ({"name": "ok", "path": "/tmp/\u0000x"}, 400, "path: holds control characters"),
    ({"name": "ok", "path": "/nonexistent/folder"}, 400, "does not exist"),
    ({"name": "ok", "path": "/etc/hostname"}, 400, "is not a folder"),
    ({"name": "ok", "path": "/" + "a" * 5000}, 400, "body.path"),
    ({"name": "ok", "path": "/tmp", "digest": "md5:abc"}, 400, "digest: must be sha256:"),
    ({"name": "ok", "path": "/tmp", "version": "v 1; rm"}, 400, "version: must match"),
    ({"name": "ok", "path": 7}, 400, "body.path"),
    ({"name": "ok"}, 400, "body.path"),
    ({"name": "ok", "path": "/tmp", "weights": "x"}, 400, "body.weights"),
])
def test_hostile_registrations_are_4xx(api, models, body, status, words):
    error = error_of(models.post("/models", json=body), status)
    assert words in error["message"]
    nothing_stored(api, models)


def test_hostile_requests_elsewhere_are_4xx(api, models):
    huge = models.post("/models", content=b'{"name": "' + b"a" * 100_000 + b'"}',
                       headers={"Content-Type": "application/json"})
    assert error_of(huge, 413)
    assert error_of(models.post("/models", content=b"{nope",
                                headers={"Content-Type": "application/json"}), 400)
    for path, params in (("/models/Nope%00", None), ("/models/" + "a" * 300, None),
                         ("/models/x", {"max_model_len": 0}),
                         ("/models/x", {"concurrency": "many"}),
                         ("/models", {"owner": "a" * 300})):
        assert error_of(models.get(path, params=params), 400)
    assert "name: must match" in error_of(models.delete("/models/..%00"), 400)["message"]
    nothing_stored(api, models)


# The CLI on the same routes


@pytest.fixture
def cli(api: Api, models, capsys: pytest.CaptureFixture[str]):
    from tests.admin.test_cli import aifactory

    def run(*argv: str) -> tuple[int, str, str]:
        return aifactory(capsys, *argv, "--url", api.url, "--admin-key", api.admin_key)

    return run


def test_model_commands(cli, api, demo, tmp_path):
    code, out, _ = cli("model", "register", "demo-ft", "--path", str(demo), "--version", "v1")
    assert code == 0
    lines = out.splitlines()
    assert "architecture:   LlamaForCausalLM" in lines and "parameters:     426,624" in lines
    assert "sizing for 8 sequence(s) of 2048 tokens:" in out
    table = rows(out[out.index("ACCELERATOR"):])
    assert table[0][:3] == ["ACCELERATOR", "FITS", "PER_REPLICA"]
    assert table[1][:3] == ["cpu", "yes", "1"]
    code, out, _ = cli("model", "show", "demo-ft", "--max-model-len", "1024",
                       "--concurrency", "2")
    assert code == 0 and "sizing for 2 sequence(s) of 1024 tokens:" in out
    code, out, _ = cli("model", "list")
    assert code == 0 and rows(out)[1][:3] == ["demo-ft", "-", "LlamaForCausalLM"]
    code, out, _ = cli("model", "show", "demo-ft", "--json")
    assert json.loads(out)["sizing"]["concurrency"] == 8

    broken = copy_of(demo, tmp_path)
    (broken / "model.safetensors").unlink()
    code, _, err = cli("model", "register", "broken", "--path", str(broken))
    assert code == 2 and "(folder): no weights" in err and err.startswith("aifactory: ")

    api.store.create_endpoint("chat", deployment={"model": str(demo), "catalogue": "demo-ft"})
    code, _, err = cli("model", "delete", "demo-ft")
    assert code == 2 and "used by endpoint(s) chat" in err
    api.store.delete_endpoint("chat")
    code, out, _ = cli("model", "delete", "demo-ft")
    assert code == 0 and "deleted catalogue model demo-ft" in out


# The SDK on the same routes


def test_the_sdks_admin_models_are_typed(api, models, demo):
    from aifactory_sdk import BadRequestError, Client, ConflictError, types

    with Client(api_key=api.admin_key, base_url=api.url, max_retries=0) as client:
        made = client.admin.models.register("demo-ft", path=str(demo), version="v1")
        assert isinstance(made, types.CatalogueModel) and made.version == "v1"
        assert isinstance(made.sizing, types.CatalogueSizing)
        shown = client.admin.models.retrieve("demo-ft", max_model_len=256, concurrency=1)
        assert shown.sizing.memory.kv_cache_bytes == 256 * 512
        assert [p.accelerator for p in shown.sizing.proposals] == ["cpu", "gpu"]
        assert [m.name for m in client.admin.models.list().data] == ["demo-ft"]
        with pytest.raises(ConflictError):
            client.admin.models.register("demo-ft", path=str(demo))
        with pytest.raises(BadRequestError, match="must be absolute"):
            client.admin.models.register("other", path="demo")
        gone = client.admin.models.delete("demo-ft")
        assert (gone.object, gone.deleted) == ("catalogue.model", True)
        assert client.admin.models.list().data == []
