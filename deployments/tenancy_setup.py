"""Prepares the tenancy store at start: migrations, the tenants and endpoints the config
declares, and the embedded default's tenant key kept in the data directory."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url

from deployments.config import DEFAULT_TENANT, ConfigError, PlatformConfig
from serving.batch.files import store as file_limits
from serving.tenancy import (
    Conflict,
    NotFound,
    Store,
    Unauthenticated,
    database_url_from_env,
    upgrade,
)

DEFAULT_KEY_FILE = "default.key"


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def prepare_store(home: Path) -> str:
    """Migrate the store and return its URL; an unreachable store stops the start here."""
    url = database_url_from_env(home)
    try:
        upgrade(url)
    except Exception as exc:
        raise ConfigError(f"the tenancy store {_safe(url)} is unreachable: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    return url


def apply_config(store: Store, config: PlatformConfig) -> None:
    """Create what the config declares and is missing; re-applying it changes nothing."""
    for tenant in config.tenants:
        try:
            store.create_tenant(tenant.name, priority=tenant.priority, slo=tenant.slo)
        except Conflict:
            store.update_tenant(tenant.name, priority=tenant.priority, slo=tenant.slo)
        if tenant.quota is not None:
            store.set_quota(tenant.name, **tenant.quota.model_dump())
        if tenant.files is not None:
            file_limits.set_limits(store, tenant.name, tenant.files)
    for endpoint in config.endpoints:
        try:
            existing = store.get_endpoint(endpoint.name)
        except NotFound:
            existing = store.create_endpoint(endpoint.name, owner=endpoint.owner)
        if existing.owner != endpoint.owner:
            raise ConfigError(
                f"endpoint {endpoint.name} is owned by {existing.owner or 'nobody (shared)'} in "
                f"the store but by {endpoint.owner or 'nobody (shared)'} in the config")
        for tenant in endpoint.shared_with:
            store.grant(endpoint.name, tenant)


def ensure_default_key(store: Store, home: Path) -> str | None:
    """The embedded default's inference key, kept in $AIFACTORY_HOME/default.key (mode 0600)
    so local tools and tests can read it. Returns the key when it was just made (to print
    once), None when the file already holds a working key."""
    path = home / DEFAULT_KEY_FILE
    if path.is_file():
        try:
            if store.authenticate(path.read_text().strip()).tenant == DEFAULT_TENANT:
                return None
        except Unauthenticated:
            pass
    created = store.create_key(DEFAULT_TENANT)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(created.plaintext + "\n")
    os.chmod(path, 0o600)
    return created.plaintext
