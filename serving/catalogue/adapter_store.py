"""Tenants' LoRA adapters in the platform's store: registered (once their folder passed the
checks, registration.py), looked up per request, listed and deleted. An adapter is its
tenant's alone: to any other tenant it is as missing as a name never registered. Its name
is a model id, unique platform-wide and never an endpoint's name."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.catalogue.facts import AdapterFacts
from serving.tenancy import Conflict, NotFound
from serving.tenancy import validation as check
from serving.tenancy.models import AdapterRow, EndpointRow
from serving.tenancy.store import _endpoint_row, _may_use, _tenant_row


class NameTaken(Conflict):
    """The name is another adapter's or an endpoint's model id. The message never says
    whose: a tenant may not learn what other tenants registered."""

    def __init__(self, name: str) -> None:
        super().__init__(f"name: {name!r} is taken by another model; pick another name")


@dataclass(frozen=True)
class Adapter:
    name: str
    tenant: str
    endpoint: str  # the base endpoint whose engine applies it
    path: str  # the folder engines load it from
    digest: str  # sha256:..., the folder's content when registered
    rank: int
    base_model: str | None
    target_modules: tuple[str, ...] | str  # a str is peft's regular expression
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        """The adapter as the admin API shows it (the tenant's own view drops `tenant`)."""
        return {"object": "adapter", "id": self.name, "name": self.name,
                "endpoint": self.endpoint, "tenant": self.tenant, "path": self.path,
                "digest": self.digest, "rank": self.rank, "base_model": self.base_model,
                "target_modules": (self.target_modules if isinstance(self.target_modules, str)
                                   else list(self.target_modules)),
                "created_at": int(self.created_at.timestamp())}


def register_adapter(store, *, name: str, tenant: str, endpoint: str, path: str,
                     facts: AdapterFacts) -> Adapter:
    """A new adapter of `tenant`'s on `endpoint`, from the checked folder `facts` describes.
    NotFound for an unknown tenant or endpoint, or one the tenant may not call (the same
    message as a missing endpoint); NameTaken when the name is a model id already. One
    transaction: audited as the store's actor, and nothing is left if it fails."""
    name = check.name("name", name)
    if facts.rank is None:  # registration.py refuses such folders first
        raise ValueError("an adapter's facts must have a rank")
    with store._tx() as s:
        owner = _tenant_row(s, tenant)
        base = _endpoint_row(s, endpoint)
        if not _may_use(s, owner, base):
            raise NotFound(f"endpoint: no endpoint named {endpoint!r}")
        ensure_free_in(s, name)
        row = AdapterRow(name=name, tenant=owner.name, endpoint=base.name, path=path,
                         digest=facts.digest, rank=facts.rank, base_model=facts.base_model,
                         target_modules=_targets_json(facts.target_modules),
                         created_at=store._now())
        s.add(row)
    return _adapter(row)


def ensure_free(store, name: str) -> None:
    """NameTaken if `name` is a model id already: asked before a folder is read (its digest
    is a full read); register_adapter asks again in its own transaction."""
    with store._tx() as s:
        ensure_free_in(s, check.name("name", name))


def ensure_free_in(s: Session, name: str) -> None:
    taken = s.get(AdapterRow, name) is not None or s.scalar(
        select(EndpointRow.id).where(EndpointRow.name == name)) is not None
    if taken:
        raise NameTaken(name)


def tenant_adapter(store, tenant: str, name: str) -> Adapter | None:
    """`tenant`'s adapter named `name`; None when there is none, also when another tenant
    holds the name. The gateway asks per request: one look-up by primary key."""
    if not isinstance(name, str) or not _is_name(name):
        return None
    with store._tx() as s:
        row = s.scalar(select(AdapterRow).where(AdapterRow.name == name,
                                                AdapterRow.tenant == tenant))
        return None if row is None else _adapter(row)


def adapters_of(store, tenant: str) -> list[Adapter]:
    """`tenant`'s adapters by name: the model ids its /v1/models adds."""
    return list_adapters(store, tenant=tenant)


def list_adapters(store, *, tenant: str | None = None,
                  endpoint: str | None = None) -> list[Adapter]:
    """Every adapter by name, or one tenant's, or those on one endpoint."""
    query = select(AdapterRow).order_by(AdapterRow.name)
    if tenant is not None:
        query = query.where(AdapterRow.tenant == check.name("tenant", tenant))
    if endpoint is not None:
        query = query.where(AdapterRow.endpoint == check.name("endpoint", endpoint))
    with store._tx() as s:
        return [_adapter(row) for row in s.scalars(query)]


def get_adapter(store, name: str, *, tenant: str | None = None) -> Adapter:
    """The adapter named `name` (with `tenant`: only if it is that tenant's); NotFound
    otherwise, with the same message either way."""
    with store._tx() as s:
        return _adapter(_found(s, name, tenant))


def delete_adapter(store, name: str, *, tenant: str | None = None) -> Adapter:
    """Removes the adapter (its folder stays); with `tenant`, only that tenant's own.
    NotFound (a LookupError) for a missing one or another tenant's, alike."""
    with store._tx() as s:
        row = _found(s, name, tenant)
        adapter = _adapter(row)
        s.delete(row)
    return adapter


def _found(s: Session, name: str, tenant: str | None) -> AdapterRow:
    row = s.get(AdapterRow, name) if _is_name(name) else None
    if row is None or (tenant is not None and row.tenant != tenant):
        if tenant is not None:
            # To a tenant the name is not repeated: the answer is the same whichever name,
            # another tenant's or none, it asked about.
            raise NotFound("name: your tenant has no adapter of that name")
        # Shown as ascii, cut short: the name may be anything a client put in a URL.
        raise NotFound(f"name: no adapter named {ascii(name)[1:-1][:64]!r}")
    return row


def _is_name(value: str) -> bool:
    try:
        check.name("name", value)
    except ValueError:
        return False
    return True


def _targets_json(targets: tuple[str, ...] | str) -> list[str] | str:
    return targets if isinstance(targets, str) else list(targets)


def _adapter(row: AdapterRow) -> Adapter:
    targets = row.target_modules
    return Adapter(name=row.name, tenant=row.tenant, endpoint=row.endpoint, path=row.path,
                   digest=row.digest, rank=row.rank, base_model=row.base_model,
                   target_modules=targets if isinstance(targets, str) else tuple(targets),
                   created_at=row.created_at)
