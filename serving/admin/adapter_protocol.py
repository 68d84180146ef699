"""The LoRA adapters' request and response bodies on the admin API (/admin/v1/adapters) and
the tenant self-service API (/tenant/v1/adapters). A tenant's view leaves out `tenant`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, StrictStr

from serving.admin.protocol import StrictModel
from serving.catalogue.adapter_store import Adapter

# Names and paths are checked by the store and registration.py, whose messages say what a
# good one is; these bounds only keep an absurd field from being read and echoed at length.
_NAME = Field(max_length=256)


class AdapterRegister(StrictModel):
    """The adapter folder at `path` (absolute, seen by every engine node), to run on
    `endpoint`'s engine as the model id `name`."""

    name: StrictStr = _NAME
    endpoint: StrictStr = _NAME
    path: StrictStr = Field(max_length=8192)


class OperatorAdapterRegister(AdapterRegister):
    """As a tenant's, for the tenant `tenant`."""

    tenant: StrictStr = _NAME


class AdapterQuery(StrictModel):
    endpoint: StrictStr | None = Field(None, max_length=256)


class OperatorAdapterQuery(AdapterQuery):
    tenant: StrictStr | None = Field(None, max_length=256)


class AdapterOut(BaseModel):
    """A LoRA adapter: `id` (= `name`) is the model id requests name; `created_at` is unix
    seconds; `target_modules` the modules it adapts (a string: peft's regular expression)."""

    object: Literal["adapter"] = "adapter"
    id: str
    name: str
    endpoint: str
    path: str
    digest: str
    rank: int
    base_model: str | None
    target_modules: list[str] | str
    created_at: int

    @classmethod
    def of(cls, adapter: Adapter) -> AdapterOut:
        shown = adapter.as_json()
        shown.pop("tenant")
        return cls(**shown)


class OperatorAdapterOut(AdapterOut):
    """As a tenant sees it, and whose it is."""

    tenant: str

    @classmethod
    def of(cls, adapter: Adapter) -> OperatorAdapterOut:
        return cls(**adapter.as_json())


class AdapterList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AdapterOut]


class OperatorAdapterList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OperatorAdapterOut]


class AdapterDeleted(BaseModel):
    object: Literal["adapter"] = "adapter"
    id: str
    deleted: Literal[True] = True
