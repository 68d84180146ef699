"""Per-tenant LoRA adapters on a shared base engine (demo-remote enables LoRA, max_loras 2):
registered through the CLI and the tenant's own API, listed only in its owner's /v1/models,
run with the adapter applied (its answers differ from the base's, and equal the adapter's
served alone also when several adapters' requests interleave, more of them than the engine
applies at once), 404 to any other tenant, recorded under the adapter's name, and gone when
deleted."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import ADMIN_KEY, aifactory, openai_client

BASE = "demo-remote"
PROMPTS = ["The licence", "Permission is hereby granted"]


@pytest.fixture(scope="module")
def adapter_dirs(platform, tmp_path_factory) -> dict[str, Path]:
    """Three demo adapters (different seeds, so different weights): the first made by the
    CLI where an operator keeps it, the others in acme's own adapter folder (where a tenant
    registering for itself must keep them)."""
    from deployments.demo_adapter import write_demo_adapter

    operators = tmp_path_factory.mktemp("adapters")
    made = aifactory("demo-adapter", str(operators / "ft-0"), "--seed", "0",
                     env=platform["env"], timeout=300)
    assert made.returncode == 0, made.stderr
    base = platform["home"] / "models" / "demo"
    acmes = platform["home"] / "adapters" / "acme"
    for seed in (1, 2):
        write_demo_adapter(acmes / f"ft-{seed}", base, seed=seed)
    return {"ft-0": operators / "ft-0", "ft-1": acmes / "ft-1", "ft-2": acmes / "ft-2"}


@pytest.fixture(scope="module", autouse=True)
def nothing_left_behind(platform):
    """The platform is shared: the tests after these find acme's model list as it was."""
    yield
    with admin_http(platform) as http:
        for adapter in http.get("/admin/v1/adapters").json()["data"]:
            gone = http.delete(f"/admin/v1/adapters/{adapter['id']}")
            assert gone.status_code == 200, gone.text
        for model in http.get("/admin/v1/models").json()["data"]:
            http.delete(f"/admin/v1/models/{model['name']}")
        assert http.get("/admin/v1/adapters").json()["data"] == []


def greedy(client: openai.OpenAI, model: str, prompt: str) -> str:
    return client.completions.create(model=model, prompt=prompt, max_tokens=12,
                                     temperature=0).choices[0].text


def admin_http(platform) -> httpx.Client:
    return httpx.Client(base_url=platform["url"], timeout=120,
                        headers={"authorization": f"Bearer {ADMIN_KEY}"})


def test_a_tenants_adapter_serves_it_alone_and_nobody_else(platform, store, keys,
                                                           adapter_dirs):
    acme = openai_client(platform, keys["acme"]).with_options(timeout=120)
    globex = openai_client(platform, keys["globex"]).with_options(timeout=120)
    since = datetime.now(UTC) - timedelta(seconds=1)

    # An operator registers acme's first adapter through the CLI; acme its others itself.
    registered = aifactory("adapter", "register", "acme-ft-0", "--endpoint", BASE, "--path",
                           str(adapter_dirs["ft-0"]), "--tenant", "acme", "--json",
                           env=platform["env"], timeout=120)
    assert registered.returncode == 0, registered.stderr
    assert json.loads(registered.stdout)["rank"] == 8
    tenant_admin = store.create_key("acme", scope="admin").plaintext
    with httpx.Client(base_url=platform["url"], timeout=120,
                      headers={"authorization": f"Bearer {tenant_admin}"}) as http:
        # Not from outside its own folder: another tenant's adapter could lie there.
        outside = http.post("/tenant/v1/adapters", json={
            "name": "acme-ft-x", "endpoint": BASE, "path": str(adapter_dirs["ft-0"])})
        assert outside.status_code == 400, outside.text
        for n in (1, 2):
            made = http.post("/tenant/v1/adapters", json={
                "name": f"acme-ft-{n}", "endpoint": BASE, "path": str(adapter_dirs[f"ft-{n}"])})
            assert made.status_code == 201, made.text

    listed = {m.id: m for m in acme.models.list()}
    assert {"acme-ft-0", "acme-ft-1", "acme-ft-2", BASE} <= set(listed)
    assert listed["acme-ft-0"].model_extra["parent"] == BASE
    assert not {m.id for m in globex.models.list()} & {"acme-ft-0", "acme-ft-1", "acme-ft-2"}
    assert acme.models.retrieve("acme-ft-1").id == "acme-ft-1"

    # Another tenant naming it gets what a name never registered gets.
    with pytest.raises(openai.NotFoundError) as theirs:
        greedy(globex, "acme-ft-0", "hello")
    with pytest.raises(openai.NotFoundError) as missing:
        greedy(globex, "acme-ft-9", "hello")
    assert theirs.value.body["message"].replace("acme-ft-0", "X") == \
        missing.value.body["message"].replace("acme-ft-9", "X")
    with pytest.raises(openai.NotFoundError):
        globex.models.retrieve("acme-ft-0")

    # Each adapter served alone, one request at a time: not the base model's answers.
    base = {p: greedy(acme, BASE, p) for p in PROMPTS}
    alone = {(a, p): greedy(acme, a, p) for a in ("acme-ft-0", "acme-ft-1", "acme-ft-2")
             for p in PROMPTS}
    assert all(alone[("acme-ft-0", p)] != base[p] for p in PROMPTS)
    assert len({alone[(a, PROMPTS[0])] for a in ("acme-ft-0", "acme-ft-1", "acme-ft-2")}) == 3

    # Interleaved: three adapters and the base at once, more adapters than the engine's
    # max_loras (2), the first of each a load racing the others' requests.
    async def interleaved() -> list[tuple[str, str, str]]:
        async_acme = openai_client(platform, keys["acme"], async_=True).with_options(
            timeout=300)

        async def one(model: str, prompt: str) -> tuple[str, str, str]:
            reply = await async_acme.completions.create(model=model, prompt=prompt,
                                                        max_tokens=12, temperature=0)
            return model, prompt, reply.choices[0].text

        jobs = [one(m, p) for _ in range(3) for p in PROMPTS
                for m in ("acme-ft-2", "acme-ft-0", BASE, "acme-ft-1")]
        try:
            return await asyncio.gather(*jobs)
        finally:
            await async_acme.close()

    for model, prompt, text in asyncio.run(interleaved()):
        assert text == (base[prompt] if model == BASE else alone[(model, prompt)]), model

    # The ledger records each adapter request with its adapter, on its endpoint.
    records = store.usage_records("acme", since, datetime.now(UTC) + timedelta(minutes=1))
    ran = Counter(r.adapter for r in records if r.endpoint == BASE and r.outcome == "ok")
    assert ran["acme-ft-0"] == ran["acme-ft-1"] == ran["acme-ft-2"] == 2 + 6
    assert ran[None] >= 2 + 6  # the base model's (other tests may have used it too)

    # Deleted: gone from the list and answered as missing (the gateway's cache is 1 s).
    deleted = aifactory("adapter", "delete", "acme-ft-2", env=platform["env"], timeout=120)
    assert deleted.returncode == 0, deleted.stderr
    with pytest.raises(openai.NotFoundError):
        for _ in range(50):
            greedy(acme, "acme-ft-2", "hello")
            asyncio.run(asyncio.sleep(0.1))
    assert "acme-ft-2" not in {m.id for m in acme.models.list()}


def test_a_broken_or_foreign_adapter_is_refused_naming_the_cause(platform, adapter_dirs,
                                                                tmp_path):
    # The adapter's weights missing: refused, naming the file; nothing registered.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(
        (adapter_dirs["ft-0"] / "adapter_config.json").read_text())
    refused = aifactory("adapter", "register", "acme-broken", "--endpoint", BASE, "--path",
                        str(broken), "--tenant", "acme", env=platform["env"], timeout=120)
    assert refused.returncode != 0
    assert "adapter_model.safetensors" in refused.stderr + refused.stdout
    with admin_http(platform) as http:
        assert http.get("/admin/v1/adapters/acme-broken").status_code == 404
        # An endpoint whose engine does not enable LoRA refuses any adapter.
        no_lora = http.post("/admin/v1/adapters", json={
            "name": "acme-on-demo", "endpoint": "demo", "tenant": "acme",
            "path": str(adapter_dirs["ft-0"])})
        assert no_lora.status_code == 400, no_lora.text
        assert "LoRA" in no_lora.json()["error"]["message"]


def test_a_checkpoint_is_registered_with_its_sizing_or_refused_naming_the_cause(platform,
                                                                                 tmp_path):
    """The model catalogue through the CLI on the running platform: the demo model's folder
    registered and sized; a copy missing its tokenizer and one of an architecture the
    installed vLLM does not serve refused, each naming the file."""
    demo = platform["home"] / "models" / "demo"
    made = aifactory("model", "register", "demo-base", "--path", str(demo), "--version", "v1",
                     "--json", env=platform["env"], timeout=180)
    assert made.returncode == 0, made.stderr
    entry = json.loads(made.stdout)
    assert entry["architecture"] == "LlamaForCausalLM" and entry["has_tokenizer"]
    shown = aifactory("model", "show", "demo-base", "--max-model-len", "512", "--json",
                      env=platform["env"], timeout=120)
    assert shown.returncode == 0, shown.stderr
    sizing = json.loads(shown.stdout)["sizing"]
    assert sizing["memory"]["weights_bytes"] > 0
    cpu = next(p for p in sizing["proposals"] if p["accelerator"] == "cpu")
    assert cpu["fits"] and cpu["accelerators_per_replica"] > 0

    def copy_without(name: str) -> Path:
        folder = tmp_path / f"without-{name}"
        folder.mkdir()
        for file in demo.iterdir():
            if file.is_file() and file.name != name:
                (folder / file.name).write_bytes(file.read_bytes())
        return folder

    no_tokenizer = copy_without("tokenizer.json")
    for extra in ("tokenizer_config.json",):
        (no_tokenizer / extra).unlink(missing_ok=True)
    alien = copy_without("nothing")
    config = json.loads((alien / "config.json").read_text())
    (alien / "config.json").write_text(json.dumps({**config,
                                                   "architectures": ["NotAModelForCausalLM"]}))
    for name, folder, causes in (("demo-broken", no_tokenizer, ("tokenizer.json",)),
                                 ("demo-alien", alien, ("config.json", "NotAModelForCausalLM"))):
        refused = aifactory("model", "register", name, "--path", str(folder),
                            env=platform["env"], timeout=180)
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0 and all(c in said for c in causes), said
        assert aifactory("model", "show", name, env=platform["env"],
                         timeout=120).returncode != 0
