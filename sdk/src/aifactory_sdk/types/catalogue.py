"""The model catalogue as the admin API shows it: a registered checkpoint's facts and, when
shown one at a time, what a replica of it needs on each accelerator kind of the partition."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from aifactory_sdk.types._result import Result


class CatalogueMemory(BaseModel):
    """A replica's memory: the weights, and the KV cache for `tokens` (context x concurrency)."""

    model_config = ConfigDict(extra="allow")
    weights_bytes: int
    kv_bytes_per_token: int
    tokens: int
    kv_cache_bytes: int
    total_bytes: int


class CatalogueProposal(BaseModel):
    """One replica on one accelerator kind: `accelerators_per_replica` (a share when several
    copies fit one device) and `tensor_parallel_size`; `reason` says why."""

    model_config = ConfigDict(extra="allow")
    accelerator: str
    fits: bool
    accelerators_per_replica: float
    tensor_parallel_size: int
    copies_per_device: int
    need_bytes_per_device: int
    usable_bytes_per_device: int
    reason: str


class CatalogueSizing(BaseModel):
    """For `concurrency` sequences of `context_length` tokens; `error` says why there is no
    estimate (e.g. a context longer than the model's)."""

    model_config = ConfigDict(extra="allow")
    context_length: int | None = None
    concurrency: int
    memory: CatalogueMemory | None = None
    proposals: list[CatalogueProposal] = []
    error: str | None = None


class CatalogueModel(Result):
    """A registered model: its folder (`source`), owner (None: platform-wide), version,
    content digest and the facts read from it."""

    object: Literal["catalogue.model"] = "catalogue.model"
    name: str
    owner: str | None = None
    source: str
    version: str | None = None
    digest: str
    architecture: str
    parameter_count: int
    dtype: str | None = None
    context_length: int | None = None
    has_tokenizer: bool
    has_chat_template: bool
    weights_bytes: int
    created_at: datetime
    sizing: CatalogueSizing | None = None  # from register and retrieve, not in lists


class CatalogueModelList(Result):
    object: Literal["list"] = "list"
    data: list[CatalogueModel]
