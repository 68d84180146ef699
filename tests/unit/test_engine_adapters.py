"""The engine's adapter table (serving.engine.adapters): one load per adapter however many
requests ask for it at once, a new digest loaded again in place, and only adapters no
request holds dropped past the bound. vLLM's serving layer is stood in for by a recorder of
its calls (the real one is exercised end to end in tests/e2e/test_adapters.py)."""

from __future__ import annotations

import asyncio

import pytest

from serving.catalogue.facts import folder_digest
from serving.engine.adapters import (
    ADAPTER_FIELD,
    AdapterLoadFailed,
    AdapterRef,
    EngineAdapters,
    snapshot_folder,
    without_adapter_field,
)


class RecordingModels:
    """vLLM's OpenAIServingModels' two calls used here, slow to load as a real load is."""

    def __init__(self, fail: set[str] = frozenset()) -> None:
        self.lora_requests: dict[str, str] = {}
        self.calls: list[tuple[str, str, bool]] = []
        self.loading = 0
        self.most_loading = 0
        self.fail = fail

    async def load_lora_adapter(self, request):
        from vllm.entrypoints.serve.engine.protocol import ErrorInfo, ErrorResponse

        self.loading += 1
        self.most_loading = max(self.most_loading, self.loading)
        await asyncio.sleep(0.01)
        self.loading -= 1
        self.calls.append(("load", request.lora_name, request.load_inplace))
        if request.lora_name in self.fail:
            return ErrorResponse(error=ErrorInfo(message="no such folder", type="NotFoundError",
                                                 code=404))
        self.lora_requests[request.lora_name] = request.lora_path
        return "ok"

    async def unload_lora_adapter(self, request):
        self.calls.append(("unload", request.lora_name, False))
        del self.lora_requests[request.lora_name]
        return "ok"


def as_registered(adapter: AdapterRef) -> str:
    return adapter.path  # snapshot_folder's own tests are below


def ref(name: str, digest: str = "sha256:1") -> AdapterRef:
    return AdapterRef(name, f"/adapters/{name}", digest)


async def use(adapters: EngineAdapters, adapter: AdapterRef, hold_s: float = 0.0) -> None:
    async with adapters.using(adapter):
        await asyncio.sleep(hold_s)


def test_concurrent_requests_for_new_adapters_load_each_once_and_one_at_a_time():
    models = RecordingModels()
    adapters = EngineAdapters(models, snapshot=as_registered)

    async def main():
        await asyncio.gather(*(use(adapters, ref(f"a{i % 3}")) for i in range(30)))

    asyncio.run(main())
    assert sorted(c for c in models.calls) == [("load", "a0", False), ("load", "a1", False),
                                                ("load", "a2", False)]
    assert models.most_loading == 1
    assert sorted(models.lora_requests) == ["a0", "a1", "a2"]


def test_a_new_digest_under_a_name_is_loaded_again_in_place():
    models = RecordingModels()
    adapters = EngineAdapters(models, snapshot=as_registered)

    async def main():
        await use(adapters, ref("a", "sha256:1"))
        await use(adapters, ref("a", "sha256:1"))
        await use(adapters, ref("a", "sha256:2"))

    asyncio.run(main())
    assert models.calls == [("load", "a", False), ("load", "a", True)]


def test_past_the_bound_the_least_recently_used_unheld_adapter_is_dropped():
    models = RecordingModels()
    adapters = EngineAdapters(models, keep=2, snapshot=as_registered)

    async def main():
        await use(adapters, ref("a"))
        await use(adapters, ref("b"))
        await use(adapters, ref("a"))  # b is now the least recently used
        held = asyncio.create_task(use(adapters, ref("c"), hold_s=0.2))
        await asyncio.sleep(0.05)
        assert ("unload", "b", False) in models.calls
        # a and c are in use or recent; d's load must not drop c while a request holds it.
        async with adapters.using(ref("a")):
            await use(adapters, ref("d"))
            assert "c" in models.lora_requests and "a" in models.lora_requests
        await held

    asyncio.run(main())
    assert "b" not in models.lora_requests


def test_a_failed_load_raises_and_leaves_nothing_registered():
    models = RecordingModels(fail={"gone"})
    adapters = EngineAdapters(models, snapshot=as_registered)

    async def main():
        with pytest.raises(AdapterLoadFailed) as failed:
            await use(adapters, ref("gone"))
        return failed.value

    failure = asyncio.run(main())
    assert failure.status == 404 and "no such folder" in str(failure)
    assert adapters.registered == [] and "gone" not in models.lora_requests


def test_the_field_is_taken_out_of_the_body_the_engine_validates():
    body = {"model": "acme-ft", "prompt": "x",
            ADAPTER_FIELD: {"path": "/adapters/acme-ft", "digest": "sha256:9"}}
    rest, adapter = without_adapter_field(body)
    assert rest == {"model": "acme-ft", "prompt": "x"} and ADAPTER_FIELD in body
    assert adapter == AdapterRef("acme-ft", "/adapters/acme-ft", "sha256:9")
    assert without_adapter_field({"model": "m"}) == ({"model": "m"}, None)


def _adapter_folder(where):
    where.mkdir(parents=True)
    (where / "adapter_config.json").write_text('{"r": 8}')
    (where / "adapter_model.safetensors").write_bytes(b"weights")
    return where


def test_the_engine_loads_a_checked_private_copy_of_the_registered_folder(tmp_path):
    folder = _adapter_folder(tmp_path / "acme" / "ft")
    registered = AdapterRef("acme-ft", str(folder), folder_digest(folder))
    cache = tmp_path / "cache"
    cache.mkdir()
    copy = snapshot_folder(registered, cache)
    assert copy != str(folder) and folder_digest(copy) == registered.digest
    # Changed after registration (here: its weights swapped for a link to other weights):
    # what the engine already copied stays; a new copy is refused.
    other = _adapter_folder(tmp_path / "globex" / "ft")
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.safetensors").symlink_to(other / "adapter_model.safetensors")
    (other / "adapter_model.safetensors").write_bytes(b"their weights")
    assert snapshot_folder(registered, cache) == copy
    fresh = tmp_path / "fresh-cache"
    fresh.mkdir()
    with pytest.raises(AdapterLoadFailed) as refused:
        snapshot_folder(registered, fresh)
    assert refused.value.status == 409 and "changed since it was registered" in str(
        refused.value)
    assert list(fresh.iterdir()) == []  # nothing half-copied left


def test_a_folder_gone_is_a_clear_refusal(tmp_path):
    with pytest.raises(AdapterLoadFailed) as refused:
        snapshot_folder(AdapterRef("x", str(tmp_path / "nowhere"), "sha256:0"), tmp_path)
    assert refused.value.status == 400 and "cannot be read" in str(refused.value)
