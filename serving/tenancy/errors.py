"""The tenancy layer's own errors, one small tree the gateway maps to HTTP statuses."""

from __future__ import annotations


class TenancyError(Exception):
    """Base of every error this package raises on purpose."""


# Refused writes and look-ups: the store is unchanged after any of these.


class Invalid(TenancyError, ValueError):
    """A value failed validation; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(TenancyError, LookupError):
    """The named tenant, endpoint, key or quota does not exist."""


class Conflict(TenancyError):
    """The write would break uniqueness (a name taken, a grant already given)."""


# Authentication: raised by `Store.authenticate`, mapped to 401 and 403.


class Unauthenticated(TenancyError):
    """The presented key is malformed, unknown, revoked or expired (`reason` says which)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"API key rejected: {reason}")
        self.reason = reason


class Forbidden(TenancyError):
    """The key is valid but may not do this (its tenant is suspended, or it lacks the scope)."""
