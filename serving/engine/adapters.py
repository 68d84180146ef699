"""Tenants' LoRA adapters on one engine: registered with vLLM's serving layer on first use,
the least recently used dropped from it past a bound.

The gateway names the adapter in the request's `model` and says where it lies in a private
field (ADAPTER_FIELD) that only gateways can send: engines are reached over links that need
the platform's secret, and the gateway refuses the field from clients. vLLM's worker keeps the
adapters' weights itself (at most max_loras in a step, max_cpu_loras cached, least recently
used evicted and loaded again from their folders when asked for); what is kept here is vLLM's
name -> LoRARequest table, which its requests resolve `model` against.

What is loaded is a private copy of the folder, taken when the adapter is first used and
checked against the digest it was registered with: vLLM reads an evicted adapter again from
its path later, and a tenant could otherwise change its folder after registration (swap in
links to another tenant's weights, say) and have that served.

Loads are one at a time per engine: vLLM's dynamic loading races under concurrent loads
(vllm#47724), and a name's table entry must not be replaced or dropped between a request's
check and vLLM resolving its `model`, so a request holds its adapter (`using`) until vLLM has
resolved it, and only adapters no request holds are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from serving.catalogue.facts import folder_digest

logger = logging.getLogger(__name__)

ADAPTER_FIELD = "aifactory_adapter"
# vLLM's table holds names and paths only (the weights are bounded by max_cpu_loras): the
# bound keeps a long-running engine's table from growing with every adapter ever asked for.
KEEP_REGISTERED = 256


@dataclass(frozen=True)
class AdapterRef:
    """An adapter as a request names it: its model id, folder and content digest (a new
    digest under the same name is a re-registered adapter: loaded again, in place)."""

    name: str
    path: str
    digest: str

    def to_field(self) -> dict[str, str]:
        return {"path": self.path, "digest": self.digest}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> AdapterRef | None:
        field = body.get(ADAPTER_FIELD)
        if not isinstance(field, dict):
            return None
        return cls(str(body.get("model")), str(field.get("path")), str(field.get("digest")))


def without_adapter_field(body: dict[str, Any]) -> tuple[dict[str, Any], AdapterRef | None]:
    if ADAPTER_FIELD not in body:
        return body, None
    ref = AdapterRef.from_body(body)
    rest = dict(body)
    rest.pop(ADAPTER_FIELD)
    return rest, ref


class AdapterLoadFailed(Exception):
    """vLLM refused the adapter's folder (its message says why)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def snapshot_folder(ref: AdapterRef, cache: Path) -> str:
    """The adapter's folder as registered: a copy under `cache` (links followed, so nothing
    in it points elsewhere), kept by digest, made once; AdapterLoadFailed when the folder's
    content is no longer what was registered."""
    kept = cache / ref.digest.replace(":", "-").replace("/", "-")
    if kept.is_dir():
        return str(kept)
    staging = Path(tempfile.mkdtemp(dir=cache))
    try:
        copy = staging / "adapter"
        try:
            shutil.copytree(ref.path, copy, symlinks=False)
        except OSError as exc:
            raise AdapterLoadFailed(HTTPStatus.BAD_REQUEST,
                                    f"its folder cannot be read: {exc.strerror}") from None
        if folder_digest(copy) != ref.digest:
            raise AdapterLoadFailed(HTTPStatus.CONFLICT,
                                    "its folder changed since it was registered; register it "
                                    "again")
        try:
            os.rename(copy, kept)
        except OSError:  # another load of the same digest got there first
            if not kept.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(kept)


class EngineAdapters:
    """The adapters registered with one engine's vLLM serving layer (OpenAIServingModels).
    `snapshot` turns a request's adapter into the folder vLLM loads (default: a checked
    private copy under a fresh temporary folder)."""

    def __init__(self, models, keep: int = KEEP_REGISTERED,
                 snapshot: Callable[[AdapterRef], str] | None = None) -> None:
        self._models = models
        self._keep = keep
        self._cache: Path | None = None
        if snapshot is None:
            cache = self._cache = Path(tempfile.mkdtemp(prefix="aifactory-adapters-"))
            snapshot = lambda ref: snapshot_folder(ref, cache)
        self._snapshot = snapshot
        self._digests: OrderedDict[str, str] = OrderedDict()  # least recently used first
        self._held: Counter[str] = Counter()
        self._load = asyncio.Lock()

    def close(self) -> None:
        """The copies go with the engine."""
        if self._cache is not None:
            shutil.rmtree(self._cache, ignore_errors=True)

    @property
    def registered(self) -> list[str]:
        return list(self._digests)

    @asynccontextmanager
    async def using(self, ref: AdapterRef) -> AsyncIterator[None]:
        """The adapter registered (loaded now if it is not) and kept while the block runs."""
        self._held[ref.name] += 1
        try:
            if self._digests.get(ref.name) != ref.digest:
                await self._register(ref)
            self._digests.move_to_end(ref.name)
            yield
        finally:
            self._held[ref.name] -= 1
            if not self._held[ref.name]:
                del self._held[ref.name]

    async def _register(self, ref: AdapterRef) -> None:
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.entrypoints.serve.lora.protocol import LoadLoRAAdapterRequest

        async with self._load:
            if self._digests.get(ref.name) == ref.digest:  # loaded while this one waited
                return
            path = await asyncio.to_thread(self._snapshot, ref)
            replacing = ref.name in self._models.lora_requests
            result = await self._models.load_lora_adapter(LoadLoRAAdapterRequest(
                lora_name=ref.name, lora_path=path, load_inplace=replacing))
            if isinstance(result, ErrorResponse):
                raise AdapterLoadFailed(result.error.code, result.error.message)
            self._digests[ref.name] = ref.digest
            logger.info("LoRA adapter %s registered from %s (a copy of %s)", ref.name, path,
                        ref.path)
            await self._drop_unused()

    async def _drop_unused(self) -> None:
        from vllm.entrypoints.serve.lora.protocol import UnloadLoRAAdapterRequest

        for name in list(self._digests):
            if len(self._digests) <= self._keep:
                return
            if self._held[name]:
                continue
            del self._digests[name]
            await self._models.unload_lora_adapter(UnloadLoRAAdapterRequest(lora_name=name))
