"""Tenants' LoRA adapters: any tenant's for the platform's admins (`client.admin.adapters`),
or the key's own tenant's (`client.tenant.adapters`: any key reads, an admin-scoped key
registers and deletes). An adapter's name is a model id: requests naming it run on its
endpoint's engine with the adapter applied."""

from __future__ import annotations

from typing import Any

from aifactory_sdk._base import Resource, _segment
from aifactory_sdk._core import Call
from aifactory_sdk.types.adapter import (
    Adapter,
    AdapterDeleted,
    AdapterList,
    OperatorAdapter,
    OperatorAdapterList,
)


class _Adapters(Resource):
    """The calls both share, under `_root` (/admin/v1 or /tenant/v1)."""

    _root = ""
    _one: type = Adapter

    def _register(self, name: str, endpoint: str, path: str, **more: Any) -> Any:
        return self._send(Call("POST", f"{self._root}/adapters", self._one,
                               body={"name": name, "endpoint": endpoint, "path": path, **more}))

    def retrieve(self, name: str) -> Any:
        """The adapter (another tenant's, like a missing one: NotFoundError)."""
        return self._send(Call("GET", f"{self._root}/adapters/{_segment(name)}", self._one))

    def delete(self, name: str) -> Any:
        """`AdapterDeleted`; its folder stays. Requests naming it answer 404 from then on."""
        return self._send(Call("DELETE", f"{self._root}/adapters/{_segment(name)}",
                               AdapterDeleted))


class OperatorAdapters(_Adapters):
    """Every tenant's adapters (a platform admin's key)."""

    _root = "/admin/v1"
    _one = OperatorAdapter

    def register(self, name: str, *, endpoint: str, path: str, tenant: str) -> Any:
        """`OperatorAdapter`: the folder `path` (absolute, seen by every engine node) for
        `tenant`, on `endpoint`, once checked against the endpoint's model and its
        max_lora_rank. A refusal (BadRequestError) names each file and reason; nothing is
        registered then. A name that is a model id already: ConflictError."""
        return self._register(name, endpoint, path, tenant=tenant)

    def list(self, *, tenant: str | None = None, endpoint: str | None = None) -> Any:
        """`OperatorAdapterList` by name: all, or one tenant's, or those on one endpoint."""
        return self._send(Call("GET", "/admin/v1/adapters", OperatorAdapterList,
                               params={"tenant": tenant, "endpoint": endpoint}))


class TenantAdapters(_Adapters):
    """The key's own tenant's adapters."""

    _root = "/tenant/v1"

    def register(self, name: str, *, endpoint: str, path: str) -> Any:
        """`Adapter`, as `admin.adapters.register` for this tenant (an admin-scoped key; an
        endpoint this tenant may not call is NotFoundError, as a missing one)."""
        return self._register(name, endpoint, path)

    def list(self, *, endpoint: str | None = None) -> Any:
        """`AdapterList`: this tenant's adapters by name."""
        return self._send(Call("GET", "/tenant/v1/adapters", AdapterList,
                               params={"endpoint": endpoint}))
