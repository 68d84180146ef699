"""Files' metadata in the platform's store (the `files` and `file_quotas` tables), read and
written through the tenancy store's engine and clock, as serving.tenancy.stored_responses
does. A file is only ever found by its own tenant: another tenant's id is as missing as one
that never existed, and an expired file is as missing as a deleted one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select

from serving.batch.files.rules import (
    FileLimitOverrides,
    FileLimits,
    FileUsage,
    ListQuery,
    Refused,
    is_file_id,
    refuse_upload,
)
from serving.tenancy import validation as check
from serving.tenancy.errors import NotFound
from serving.tenancy.models import FileQuotaRow, FileRow, TenantRow

_PURGE_BATCH = 500


@dataclass(frozen=True)
class FileRecord:
    id: str
    tenant: str
    purpose: str
    filename: str
    bytes: int
    created_at: datetime
    expires_at: datetime | None

    def as_openai(self) -> dict[str, Any]:
        """OpenAI's File object. `status` is deprecated there but still required: a file
        here is complete when it is listed, i.e. `processed`."""
        body: dict[str, Any] = {
            "id": self.id, "object": "file", "bytes": self.bytes,
            "created_at": int(self.created_at.timestamp()), "filename": self.filename,
            "purpose": self.purpose, "status": "processed"}
        if self.expires_at is not None:
            body["expires_at"] = int(self.expires_at.timestamp())
        return body


class _Refusal(Exception):
    def __init__(self, refused: Refused) -> None:
        self.refused = refused


def _live(now: datetime):
    return or_(FileRow.expires_at.is_(None), FileRow.expires_at > now)


def _usage(s, tenant: str, now: datetime, leaving_out: str | None = None) -> FileUsage:
    where = [FileRow.tenant == tenant, _live(now)]
    if leaving_out is not None:
        where.append(FileRow.id != leaving_out)
    files, total = s.execute(
        select(func.count(FileRow.id), func.coalesce(func.sum(FileRow.bytes), 0))
        .where(*where)).one()
    return FileUsage(int(files), int(total))


def _limits(s, tenant: str, defaults: FileLimits) -> FileLimits:
    row = s.get(FileQuotaRow, tenant)
    if row is None:
        return defaults
    return FileLimitOverrides(max_file_bytes=row.max_file_bytes, max_files=row.max_files,
                              max_total_bytes=row.max_total_bytes).over(defaults)


def limits_and_usage(store, tenant: str, defaults: FileLimits) -> tuple[FileLimits, FileUsage]:
    """The tenant's limits (its own over `defaults`) and what its files take now."""
    with store._tx() as s:
        return _limits(s, tenant, defaults), _usage(s, tenant, store._now())


def add(store, record: FileRecord, defaults: FileLimits | None) -> FileRecord | Refused:
    """Record a file whose bytes are stored; within the tenant's limits unless `defaults`
    is None (files the platform writes, such as a batch's output). The check and the insert
    are one transaction, and concurrent uploads of one tenant are serialised (PostgreSQL
    locks the tenant's row; SQLite has one writer), so two cannot both take the last room."""
    try:
        with store._tx() as s:
            # PostgreSQL: held until commit. SQLite ignores it, but its insert below takes
            # the database's one write lock before the usage is read.
            s.execute(select(TenantRow.id).where(TenantRow.name == record.tenant)
                      .with_for_update())
            s.add(_row(record))
            s.flush()
            if defaults is not None:
                refused = refuse_upload(_limits(s, record.tenant, defaults),
                                        _usage(s, record.tenant, store._now(), record.id),
                                        record.bytes)
                if refused is not None:
                    raise _Refusal(refused)
    except _Refusal as refusal:
        return refusal.refused
    return record


def find(store, tenant: str, file_id: str) -> FileRecord | None:
    if not is_file_id(file_id):
        return None
    with store._tx() as s:
        row = s.get(FileRow, file_id)
        if row is None or row.tenant != tenant or \
                (row.expires_at is not None and row.expires_at <= store._now()):
            return None
        return _record(row)


def page(store, tenant: str, query: ListQuery) -> tuple[list[FileRecord], bool]:
    """The tenant's files in id order (creation order), after `query.after` in that order,
    at most `query.limit` of them, and whether more follow."""
    statement = select(FileRow).where(FileRow.tenant == tenant, _live(store._now()))
    if query.purpose is not None:
        statement = statement.where(FileRow.purpose == query.purpose)
    if query.after is not None:
        statement = statement.where(FileRow.id > query.after if query.order == "asc"
                                    else FileRow.id < query.after)
    statement = statement.order_by(FileRow.id.asc() if query.order == "asc"
                                   else FileRow.id.desc()).limit(query.limit + 1)
    with store._tx() as s:
        rows = s.scalars(statement).all()
    return [_record(r) for r in rows[:query.limit]], len(rows) > query.limit


def remove(store, tenant: str, file_id: str) -> bool:
    """Forget the tenant's file of that id (its bytes are the caller's to delete next);
    whether there was one."""
    if not is_file_id(file_id):
        return False
    with store._tx() as s:
        gone = s.execute(delete(FileRow).where(
            FileRow.id == file_id, FileRow.tenant == tenant, _live(store._now())))
        return gone.rowcount > 0


def purge_expired(store) -> list[str]:
    """Forget up to a batch of expired files (of any tenant); their ids, whose bytes the
    caller deletes."""
    now = store._now()
    with store._tx() as s:
        ids = list(s.scalars(select(FileRow.id).where(
            and_(FileRow.expires_at.is_not(None), FileRow.expires_at <= now))
            .limit(_PURGE_BATCH)))
        if ids:
            s.execute(delete(FileRow).where(FileRow.id.in_(ids)))
    return ids


def set_limits(store, tenant: str, overrides: FileLimitOverrides) -> None:
    """Give the tenant its own limits (None fields: the platform's)."""
    tenant = check.name("tenant", tenant)
    with store._tx() as s:
        if s.scalar(select(TenantRow.id).where(TenantRow.name == tenant)) is None:
            raise NotFound(f"tenant {tenant!r} does not exist")
        row = s.get(FileQuotaRow, tenant) or FileQuotaRow(tenant=tenant)
        row.max_file_bytes = overrides.max_file_bytes
        row.max_files = overrides.max_files
        row.max_total_bytes = overrides.max_total_bytes
        s.add(row)


def get_limits(store, tenant: str) -> FileLimitOverrides:
    with store._tx() as s:
        row = s.get(FileQuotaRow, tenant)
    if row is None:
        return FileLimitOverrides()
    return FileLimitOverrides(max_file_bytes=row.max_file_bytes, max_files=row.max_files,
                              max_total_bytes=row.max_total_bytes)


def _row(record: FileRecord) -> FileRow:
    return FileRow(id=record.id, tenant=record.tenant, purpose=record.purpose,
                   filename=record.filename, bytes=record.bytes,
                   created_at=record.created_at, expires_at=record.expires_at)


def _record(row: FileRow) -> FileRecord:
    return FileRecord(row.id, row.tenant, row.purpose, row.filename, row.bytes,
                      row.created_at, row.expires_at)
