"""The model catalogue in the platform's store: register, list, get, delete. A model is
registered only once its checks passed (model_checks.py), in one transaction, so there is
never half an entry; it is not deleted while an endpoint created from it runs."""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.catalogue.facts import ModelFacts
from serving.catalogue.model_record import CatalogueModel, shape_of
from serving.tenancy import Conflict, NotFound
from serving.tenancy import validation as check
from serving.tenancy.models import CatalogueModelRow, EndpointRow, TenantRow


def register(store, *, name: str, owner: str | None, version: str | None, facts: ModelFacts,
             architecture: str) -> CatalogueModel:
    """A new entry for the checked folder `facts` describes; Conflict if the name is taken,
    NotFound if the owner is no tenant."""
    name = check.name("name", name)
    owner = None if owner is None else check.name("tenant", owner)
    entry = CatalogueModel.of(name, owner, version, facts, architecture, store._now())
    with store._tx() as s:
        if owner is not None and s.scalar(select(TenantRow.id).where(
                TenantRow.name == owner)) is None:
            raise NotFound(f"tenant: no tenant named {owner!r}")
        if s.get(CatalogueModelRow, name) is not None:
            raise _taken(name)
        s.add(_row(entry))
    return entry


def ensure_free(store, name: str) -> None:
    """Conflict if `name` is taken: asked before a folder is read (its digest is a full
    read); register asks again in its transaction."""
    with store._tx() as s:
        if s.get(CatalogueModelRow, check.name("name", name)) is not None:
            raise _taken(name)


def get(store, name: str) -> CatalogueModel:
    with store._tx() as s:
        return _entry(_found(s, name))


def list_models(store, *, owner: str | None = None) -> list[CatalogueModel]:
    """Every entry by name, or one tenant's own."""
    query = select(CatalogueModelRow).order_by(CatalogueModelRow.name)
    if owner is not None:
        query = query.where(CatalogueModelRow.owner == check.name("tenant", owner))
    with store._tx() as s:
        return [_entry(row) for row in s.scalars(query)]


def delete(store, name: str) -> CatalogueModel:
    """Removes the entry (its folder stays); Conflict while endpoints created from it exist."""
    with store._tx() as s:
        row = _found(s, name)
        users = endpoints_using(s, row.name)
        if users:
            raise Conflict(f"name: catalogue model {name!r} is used by endpoint(s) "
                           f"{', '.join(users)}; delete them first")
        entry = _entry(row)
        s.delete(row)
    return entry


def endpoints_using(s: Session, name: str) -> list[str]:
    """The endpoints created from the entry: their deployment records it under `catalogue`
    (placement.catalogue_deployment). Endpoints of the config file name folders, not entries."""
    rows = s.execute(select(EndpointRow.name, EndpointRow.deployment)
                     .where(EndpointRow.deployment.is_not(None)).order_by(EndpointRow.name))
    return [endpoint for endpoint, deployment in rows
            if json.loads(deployment).get("catalogue") == name]


def _taken(name: str) -> Conflict:
    return Conflict(f"name: catalogue model {name!r} exists; delete it first or pick "
                    "another name")


def _found(s: Session, name: str) -> CatalogueModelRow:
    row = s.get(CatalogueModelRow, check.name("name", name))
    if row is None:
        raise NotFound(f"name: no catalogue model named {name!r}")
    return row


def _row(e: CatalogueModel) -> CatalogueModelRow:
    return CatalogueModelRow(
        name=e.name, owner=e.owner, source=e.source, version=e.version, digest=e.digest,
        architecture=e.architecture, parameter_count=e.parameter_count, dtype=e.dtype,
        context_length=e.context_length, has_tokenizer=e.has_tokenizer,
        has_chat_template=e.has_chat_template, weights_bytes=e.weights_bytes,
        shape=e.shape_json(), created_at=e.created_at)


def _entry(row: CatalogueModelRow) -> CatalogueModel:
    return CatalogueModel(
        name=row.name, owner=row.owner, source=row.source, version=row.version,
        digest=row.digest, architecture=row.architecture, parameter_count=row.parameter_count,
        dtype=row.dtype, context_length=row.context_length, has_tokenizer=row.has_tokenizer,
        has_chat_template=row.has_chat_template, weights_bytes=row.weights_bytes,
        shape=shape_of(row.shape), created_at=row.created_at)
