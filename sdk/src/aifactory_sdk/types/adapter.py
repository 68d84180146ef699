"""Tenants' LoRA adapters as the admin and self-service APIs show them: each a model id of
its own, run on its base endpoint's engine with the adapter applied."""

from __future__ import annotations

from typing import Literal

from aifactory_sdk.types._result import Result


class Adapter(Result):
    """A LoRA adapter as its tenant sees it: `id` (= `name`) is the model id requests name;
    `created_at` is unix seconds; `target_modules` a string is peft's regular expression."""

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


class OperatorAdapter(Adapter):
    """As the platform's admins see it: and whose it is."""

    tenant: str


class AdapterList(Result):
    object: Literal["list"] = "list"
    data: list[Adapter]


class OperatorAdapterList(Result):
    object: Literal["list"] = "list"
    data: list[OperatorAdapter]


class AdapterDeleted(Result):
    object: Literal["adapter"] = "adapter"
    id: str
    deleted: bool = True
