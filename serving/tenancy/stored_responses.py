"""Responses API responses kept for their tenant (`store: true`, OpenAI's default): the
response as answered and the conversation before it, so that `previous_response_id`
continues it from any gateway replica, after any restart, until the retention ends. A
response is only ever found by its own tenant: another tenant's id is as missing as one
that never existed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from serving.tenancy import validation as check
from serving.tenancy.models import StoredResponseRow

# OpenAI keeps stored responses 30 days.
DEFAULT_RETENTION = timedelta(days=30)
# vLLM's ids are "resp_" and hex; anything else can never be found (and is not looked up).
RESPONSE_ID = re.compile(r"^resp_[A-Za-z0-9_-]{1,58}$")
_PURGE_BATCH = 500


@dataclass(frozen=True)
class StoredResponse:
    id: str
    tenant: str
    endpoint: str
    created_at: datetime
    expires_at: datetime
    input: list[Any]
    response: dict[str, Any]

    def conversation(self) -> list[Any]:
        """The input items a follow-up continues from: what came before, then this
        response's output items."""
        return [*self.input, *self.response.get("output", [])]


def is_response_id(value: object) -> bool:
    return isinstance(value, str) and RESPONSE_ID.fullmatch(value) is not None


def save(store, response: dict[str, Any], *, tenant: str, endpoint: str,
         conversation: list[Any], retention: timedelta = DEFAULT_RETENTION) -> StoredResponse:
    """Keep `response` (with the `conversation` that led to it) for `tenant`; expired ones
    are purged on the way, a batch at a time."""
    now = store._now()
    tenant = check.name("tenant", tenant)
    if not is_response_id(response.get("id")):
        raise ValueError(f"not a response id: {response.get('id')!r}")
    row = StoredResponseRow(id=response["id"], tenant=tenant, endpoint=endpoint,
                            created_at=now, expires_at=now + retention,
                            input=conversation, response=response)
    with store._tx() as s:
        expired = select(StoredResponseRow.id).where(StoredResponseRow.expires_at <= now) \
            .limit(_PURGE_BATCH)
        s.execute(delete(StoredResponseRow).where(StoredResponseRow.id.in_(expired)))
        s.add(row)  # an id taken (by anyone) is a Conflict, never an overwrite
    return _record(row)


def find(store, tenant: str, response_id: str) -> StoredResponse | None:
    """The tenant's response of that id, unless it expired; None otherwise."""
    if not is_response_id(response_id):
        return None
    with store._tx() as s:
        row = s.get(StoredResponseRow, response_id)
        if row is None or row.tenant != tenant or row.expires_at <= store._now():
            return None
        return _record(row)


def remove(store, tenant: str, response_id: str) -> bool:
    """Delete the tenant's response of that id; whether there was one."""
    if not is_response_id(response_id):
        return False
    with store._tx() as s:
        gone = s.execute(delete(StoredResponseRow).where(
            StoredResponseRow.id == response_id, StoredResponseRow.tenant == tenant,
            StoredResponseRow.expires_at > store._now()))
        return gone.rowcount > 0


def _record(row: StoredResponseRow) -> StoredResponse:
    return StoredResponse(row.id, row.tenant, row.endpoint, row.created_at, row.expires_at,
                          list(row.input), dict(row.response))
