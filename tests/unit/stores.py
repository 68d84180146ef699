"""A real SQLite store for unit tests of the gateway's side of tenancy."""

from __future__ import annotations

from pathlib import Path

from serving.tenancy import Store, upgrade


def sqlite_store(directory: Path, tenant: str, endpoint: str, cls: type[Store] = Store) -> Store:
    """A migrated store in `directory` with `tenant` owning `endpoint`."""
    url = f"sqlite:///{directory}/tenancy.db"
    upgrade(url)
    store = cls(url)
    store.create_tenant(tenant)
    store.create_endpoint(endpoint, owner=tenant)
    return store
