"""A tenant's files as one object over the store (metadata) and the storage folder (bytes):
what the Files API routes call, and what the batch runner reads its inputs from and writes
its outputs to. Synchronous, like the store: async callers use a worker thread."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import BinaryIO

from serving.batch.files import store as meta
from serving.batch.files.rules import (
    BATCH_OUTPUT,
    FileLimits,
    FileUsage,
    ListQuery,
    Refused,
    display_filename,
    new_file_id,
)
from serving.batch.files.storage import FileStorage, Upload
from serving.batch.files.store import FileRecord

logger = logging.getLogger(__name__)
PLATFORM_DEFAULTS = FileLimits()


class Files:
    """`defaults`: the platform's limits, under any a tenant has of its own."""

    def __init__(self, store, storage: FileStorage, defaults: FileLimits = PLATFORM_DEFAULTS,
                 ) -> None:
        self.store = store
        self.storage = storage
        self.defaults = defaults

    # -- uploads (the routes) -----------------------------------------------------------

    def limits_and_usage(self, tenant: str) -> tuple[FileLimits, FileUsage]:
        return meta.limits_and_usage(self.store, tenant, self.defaults)

    def begin_upload(self) -> Upload:
        return self.storage.upload()

    def finish_upload(self, tenant: str, upload: Upload, *, purpose: str, filename: str,
                      expires_after_s: int | None = None) -> FileRecord | Refused:
        """The upload as the tenant's new file, if its limits still allow (another upload
        may have taken the room meanwhile); refused, its bytes are gone."""
        self._purge_expired()
        record = self._new_record(tenant, purpose, filename, upload.size, expires_after_s)
        upload.commit(record.id)
        try:
            added = meta.add(self.store, record, self.defaults)
        except BaseException:
            self.storage.remove(record.id)
            raise
        if isinstance(added, Refused):
            self.storage.remove(record.id)
        return added

    # -- files the platform writes (the batch runner) -----------------------------------

    def write(self, tenant: str, filename: str, data: bytes,
              purpose: str = BATCH_OUTPUT) -> str:
        """A new file of the tenant's holding `data` (a batch's output or error file); its
        id. Not held to the tenant's limits: a batch's results are never refused, though
        they count against its room for uploads until deleted."""
        record = self._new_record(tenant, purpose, filename, len(data), None)
        self.storage.write(record.id, data)
        try:
            meta.add(self.store, record, None)
        except BaseException:
            self.storage.remove(record.id)
            raise
        return record.id

    def read(self, tenant: str, file_id: str) -> bytes | None:
        """The whole of the tenant's file (a batch's input), or None when it has none of
        that id."""
        opened = self.open(tenant, file_id)
        if opened is None:
            return None
        with opened[1] as content:
            return content.read()

    # -- reading and deleting -----------------------------------------------------------

    def get(self, tenant: str, file_id: str) -> FileRecord | None:
        return meta.find(self.store, tenant, file_id)

    def list(self, tenant: str, query: ListQuery) -> tuple[list[FileRecord], bool]:
        return meta.page(self.store, tenant, query)

    def open(self, tenant: str, file_id: str) -> tuple[FileRecord, BinaryIO] | None:
        """The tenant's file and its bytes, open (they stay readable if it is deleted
        meanwhile); None when the tenant has no file of that id."""
        record = meta.find(self.store, tenant, file_id)
        if record is None:
            return None
        try:
            return record, self.storage.open(record.id)
        except FileNotFoundError:  # deleted between the two reads
            return None

    def delete(self, tenant: str, file_id: str) -> bool:
        if not meta.remove(self.store, tenant, file_id):
            return False
        self.storage.remove(file_id)
        return True

    # -- upkeep ---------------------------------------------------------------------------

    def _purge_expired(self) -> None:
        for file_id in meta.purge_expired(self.store):
            self.storage.remove(file_id)

    def _new_record(self, tenant: str, purpose: str, filename: str, size: int,
                    expires_after_s: int | None) -> FileRecord:
        now = self.store._now()
        file_id = new_file_id(int(now.timestamp() * 1000), secrets.token_hex(10))
        expires = None if expires_after_s is None else now + timedelta(seconds=expires_after_s)
        return FileRecord(file_id, tenant, purpose, display_filename(filename), size, now,
                          expires)
