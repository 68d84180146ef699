"""The tenancy admin API (tenants, keys, endpoints, grants, quotas and usage over HTTP) and
the tenant self-service API beside it."""

from serving.admin.bootstrap import (
    ADMIN_TENANT,
    ensure_admin_key_registered,
    ensure_admin_tenant,
    register_key,
)
from serving.admin.router import build_admin_router
from serving.admin.self_service import build_tenant_router

__all__ = [
    "ADMIN_TENANT",
    "build_admin_router",
    "build_tenant_router",
    "ensure_admin_key_registered",
    "ensure_admin_tenant",
    "register_key",
]
