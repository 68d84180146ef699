"""Checks on every value before it reaches the store: names, enums, quota ranges, ledger rows."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from pydantic import ValidationError

from observability.slo import SloSettings
from serving.tenancy.errors import Invalid

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
_NAME = re.compile(NAME_PATTERN)
# The ledger's request ids are the gateway's own; a client's id for its request is kept
# beside them: visible ASCII, a letter or digit first (no CSV formula), at most 128 characters.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
CLIENT_REQUEST_ID_PATTERN = r"^[A-Za-z0-9][\x21-\x7e]{0,127}$"
_CLIENT_REQUEST_ID = re.compile(CLIENT_REQUEST_ID_PATTERN)
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$")

# Upper bounds well past any real partition, low enough to catch a typo or a unit mix-up.
QUOTA_RANGES: dict[str, tuple[int, int]] = {
    "requests_per_minute": (1, 10_000_000),
    "tokens_per_minute": (1, 10_000_000_000),
    "concurrent_requests": (1, 100_000),
    "tokens_per_month": (1, 10**15),
}

E = TypeVar("E", bound=StrEnum)


def _shown(value: object) -> str:
    """The value for an error message, cut short: an oversized input should not flood logs."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def name(field: str, value: object) -> str:
    """A tenant or endpoint name: lowercase, 1 to 63 characters, nothing SQL or shell can use."""
    # fullmatch, not match: "$" would accept a trailing newline.
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise Invalid(field, f"must match {NAME_PATTERN}, got {_shown(value)}")
    return value


def choice(field: str, kind: type[E], value: object) -> E:
    try:
        return kind(value)
    except ValueError:
        allowed = "|".join(member.value for member in kind)
        raise Invalid(field, f"must be one of {allowed}, got {_shown(value)}") from None


def quota_value(field: str, value: object) -> int | None:
    if value is None:
        return None
    low, high = QUOTA_RANGES[field]
    # bool is an int in Python; True as "1 request per minute" is a bug, not a quota.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(field, f"must be an integer in [{low}, {high}] or None, got {_shown(value)}")
    return value


def slo_settings(field: str, value: object) -> SloSettings:
    """SLO settings, given as such or as a mapping of their fields; a refusal names the bad
    target (e.g. "ttft_p95_ms: must be whole milliseconds in [1, 600000] or None, got 0")."""
    if isinstance(value, SloSettings):
        return value
    if not isinstance(value, Mapping):
        raise Invalid(field, f"must be SloSettings or a mapping of its fields, got {_shown(value)}")
    try:
        return SloSettings.model_validate(dict(value))
    except ValidationError as exc:
        error = exc.errors()[0]
        raise Invalid(".".join(str(part) for part in error["loc"]) or field,
                      error["msg"]) from None


def request_id(value: object) -> str:
    if not isinstance(value, str) or not _REQUEST_ID.fullmatch(value):
        raise Invalid("request_id", "must be a letter or digit, then up to 127 of "
                                    f"[A-Za-z0-9._:-], got {_shown(value)}")
    return value


def client_request_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _CLIENT_REQUEST_ID.fullmatch(value):
        raise Invalid("client_request_id", "must be a letter or digit, then up to 127 visible "
                                           f"ASCII characters, got {_shown(value)}")
    return value


def adapter(value: object) -> str | None:
    """A ledger record's LoRA adapter: an adapter's name (a name, see `name`), or None."""
    return None if value is None else name("adapter", value)


def http_status(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise Invalid("http_status", f"must be an HTTP status in [100, 599], got {_shown(value)}")
    return value


def key_prefix(value: object) -> str:
    if not isinstance(value, str) or not _KEY_PREFIX.fullmatch(value):
        raise Invalid("key_prefix", "must be a letter or digit, then up to 15 of "
                                    f"[A-Za-z0-9_-], got {_shown(value)}")
    return value


def count(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
        raise Invalid(field, f"must be a non-negative integer, got {_shown(value)}")
    return value


def row_id(field: str, value: object) -> int:
    """A table's integer id: the columns are 32-bit on PostgreSQL."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
        raise Invalid(field, f"must be a positive 32-bit integer id, got {_shown(value)}")
    return value


def seconds(field: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value >= 0):
        raise Invalid(field, f"must be finite seconds >= 0 or None, got {_shown(value)}")
    return float(value)


def moment(field: str, value: object) -> datetime:
    """A timezone-aware datetime, returned in UTC: naive ones are ambiguous, so refused."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise Invalid(field, f"must be a timezone-aware datetime, got {_shown(value)}")
    return value.astimezone(UTC)
