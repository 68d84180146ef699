"""The first admin: the `admin` tenant, and admin keys whose plaintext an operator chose."""

from __future__ import annotations

import contextlib
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serving.tenancy import (
    ApiKey,
    Conflict,
    Invalid,
    KeyScope,
    NotFound,
    PriorityClass,
    Store,
    Tenant,
    Unauthenticated,
    keys,
)
from serving.tenancy import validation as check
from serving.tenancy.models import ApiKeyRow, TenantRow
from serving.tenancy.store import utc_now

ADMIN_TENANT = "admin"
_KEY_SHAPE = (f"must be {keys.KEY_PREFIX!r} then 32 of [A-Za-z0-9_-] "
              f"({keys.KEY_LENGTH} characters)")


def ensure_admin_tenant(store: Store) -> Tenant:
    """The `admin` tenant (priority critical), made if missing. Safe when several processes
    start at once: the one that loses the race finds the winner's tenant."""
    try:
        return store.get_tenant(ADMIN_TENANT)
    except NotFound:
        pass
    try:
        return store.create_tenant(ADMIN_TENANT, priority=PriorityClass.CRITICAL)
    except Conflict:
        return store.get_tenant(ADMIN_TENANT)


def register_key(store: Store, tenant: str, plaintext: str, *, scope: KeyScope | str,
                 now: datetime | None = None) -> ApiKey:
    """Store a key whose plaintext the caller chose, e.g. from AIFACTORY_ADMIN_KEY; the Store
    only stores keys it generated. Kept as the store keeps its own: hash and prefix only."""
    if not keys.well_formed(plaintext):
        raise Invalid("key", _KEY_SHAPE)
    scope = check.choice("scope", KeyScope, scope)
    created_at = check.moment("now", utc_now() if now is None else now)
    digest = keys.key_hash(plaintext)
    try:
        with Session(store.engine, expire_on_commit=False) as s, s.begin():
            owner = s.scalar(select(TenantRow).where(TenantRow.name == check.name("tenant",
                                                                                  tenant)))
            if owner is None:
                raise NotFound(f"tenant: no tenant named {tenant!r}")
            if s.scalar(select(ApiKeyRow.id).where(ApiKeyRow.key_hash == digest)) is not None:
                raise Conflict("key: this key is already registered")
            row = ApiKeyRow(tenant_id=owner.id, key_hash=digest,
                            prefix=keys.visible_prefix(plaintext), scope=scope,
                            created_at=created_at, expires_at=None, revoked_at=None)
            s.add(row)
            s.flush()
            return ApiKey(row.id, owner.name, row.prefix, scope, created_at, None, None)
    except IntegrityError as exc:  # registered by another process between check and insert
        raise Conflict("key: this key is already registered") from exc


def ensure_admin_key_registered(store: Store, plaintext: str) -> None:
    """Make `plaintext` a working admin key of the `admin` tenant, registering it if the store
    has never seen it. A key that is revoked, expired or only inference-scoped is refused
    rather than quietly repaired: someone decided that, and start-up should say so."""
    if not keys.well_formed(plaintext):
        raise Invalid("key", _KEY_SHAPE)
    ensure_admin_tenant(store)
    try:
        principal = store.authenticate(plaintext)
    except Unauthenticated as exc:
        if exc.reason != "unknown":
            raise Invalid("key", f"the admin key {plaintext[:keys.VISIBLE_PREFIX_LENGTH]}... "
                                 f"is {exc.reason}; set a new one") from None
        with contextlib.suppress(Conflict):  # another replica registered it first
            register_key(store, ADMIN_TENANT, plaintext, scope=KeyScope.ADMIN)
        return
    if principal.scope != KeyScope.ADMIN:
        raise Invalid("key", f"{principal.key_prefix}... is registered as an "
                             f"{principal.scope} key of tenant {principal.tenant!r}, not an "
                             "admin key")
