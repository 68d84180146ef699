"""The model catalogue's request and response bodies on the admin API (/admin/v1/models).
Named Catalogue*: the gateway's OpenAPI document already has vLLM's Model and ModelList."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, StrictStr

from serving.admin.protocol import StrictModel
from serving.catalogue.model_record import CatalogueModel
from serving.catalogue.placement import DEFAULT_CONCURRENCY, Sizing


class CatalogueModelRegister(StrictModel):
    """A checkpoint folder to register as `name`: absolute, on a filesystem every node sees.
    `owner`: the tenant it belongs to (none: platform-wide). `digest`: the content digest it
    must have (sha256:..., as `show` prints), checked before it is registered."""

    name: StrictStr = Field(max_length=256)
    path: StrictStr = Field(max_length=4096)
    owner: StrictStr | None = Field(None, max_length=256)
    version: StrictStr | None = Field(None, max_length=256)
    digest: StrictStr | None = Field(None, max_length=256)


class CatalogueModelQuery(StrictModel):
    """The sizing shown: for `concurrency` sequences of `max_model_len` tokens (default: the
    model's context length)."""

    max_model_len: int | None = Field(None, ge=1, le=2**31 - 1)
    concurrency: int = Field(DEFAULT_CONCURRENCY, ge=1, le=1_000_000)


class CatalogueListQuery(StrictModel):
    owner: StrictStr | None = Field(None, max_length=256)


class MemoryOut(BaseModel):
    weights_bytes: int
    kv_bytes_per_token: int
    tokens: int
    kv_cache_bytes: int
    total_bytes: int


class ProposalOut(BaseModel):
    """One replica on one accelerator kind: a share of a device, or tensor-parallel over
    several; `reason` says why."""

    accelerator: str
    fits: bool
    accelerators_per_replica: float
    tensor_parallel_size: int
    copies_per_device: int
    need_bytes_per_device: int
    usable_bytes_per_device: int
    reason: str


class SizingOut(BaseModel):
    context_length: int | None
    concurrency: int
    memory: MemoryOut | None = None
    proposals: list[ProposalOut] = []
    error: str | None = None  # why there is no estimate

    @classmethod
    def of(cls, sizing: Sizing) -> SizingOut:
        e = sizing.estimate
        memory = None if e is None else MemoryOut(
            weights_bytes=e.weights_bytes, kv_bytes_per_token=e.kv_bytes_per_token,
            tokens=e.tokens, kv_cache_bytes=e.kv_cache_bytes, total_bytes=e.total_bytes)
        proposals = [ProposalOut(accelerator=p.accelerator, fits=p.fits,
                                 accelerators_per_replica=p.accelerators_per_replica,
                                 tensor_parallel_size=p.tensor_parallel_size,
                                 copies_per_device=p.copies_per_device,
                                 need_bytes_per_device=p.need_bytes_per_device,
                                 usable_bytes_per_device=p.usable_bytes_per_device,
                                 reason=p.reason) for p in sizing.proposals.values()]
        return cls(context_length=sizing.context_length, concurrency=sizing.concurrency,
                   memory=memory, proposals=proposals, error=sizing.error)


class CatalogueModelOut(BaseModel):
    object: Literal["catalogue.model"] = "catalogue.model"
    name: str
    owner: str | None
    source: str
    version: str | None
    digest: str
    architecture: str
    parameter_count: int
    dtype: str | None
    context_length: int | None
    has_tokenizer: bool
    has_chat_template: bool
    weights_bytes: int
    created_at: datetime
    sizing: SizingOut | None = None  # in register's and retrieve's answers, not in lists

    @classmethod
    def of(cls, entry: CatalogueModel, sizing: Sizing | None = None) -> CatalogueModelOut:
        return cls(name=entry.name, owner=entry.owner, source=entry.source,
                   version=entry.version, digest=entry.digest, architecture=entry.architecture,
                   parameter_count=entry.parameter_count, dtype=entry.dtype,
                   context_length=entry.context_length, has_tokenizer=entry.has_tokenizer,
                   has_chat_template=entry.has_chat_template,
                   weights_bytes=entry.weights_bytes, created_at=entry.created_at,
                   sizing=None if sizing is None else SizingOut.of(sizing))


class CatalogueModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CatalogueModelOut]


class CatalogueModelDeleted(BaseModel):
    object: Literal["catalogue.model"] = "catalogue.model"
    name: str
    deleted: Literal[True] = True
