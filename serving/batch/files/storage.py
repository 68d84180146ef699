"""Files' bytes in a storage folder: one file per id, named by the id alone (never by
anything a client sent), written whole or not at all (a temporary file, fsynced, renamed
into place), readable by the platform's user only (0700 folder, 0600 files).

Every gateway replica must see the same folder: on one node the data home does; on a
cluster a shared filesystem mounted at the same path on every gateway node (NFS, CephFS,
a cloud file share). An object store would replace this class with one of the same few
methods (a multipart upload to a key named by the id, committed by completing it)."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import BinaryIO

from serving.batch.files.rules import is_file_id

_TEMP_PREFIX = ".upload-"
# An upload's temporary file older than this is a leftover of a process that died mid-way.
STALE_UPLOAD_S = 24 * 3600


class Upload:
    """A file being written: bytes go to a temporary file in the folder until `commit`
    renames it to its id, or `discard` removes it."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._path = folder / f"{_TEMP_PREFIX}{secrets.token_hex(16)}"
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self.size = 0

    def write(self, data: bytes) -> None:
        assert self._file is not None, "the upload is committed or discarded"
        self._file.write(data)
        self.size += len(data)

    def commit(self, file_id: str) -> None:
        """Make the bytes the file `file_id`'s, durably (data, then the folder's entry)."""
        target = _path(self._folder, file_id)
        file, self._file = self._file, None
        assert file is not None, "the upload is committed or discarded"
        try:
            file.flush()
            os.fsync(file.fileno())
        finally:
            file.close()
        os.replace(self._path, target)
        _fsync_folder(self._folder)

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._path.unlink(missing_ok=True)


class FileStorage:
    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).expanduser().resolve()
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.chmod(self.folder, 0o700)
        except PermissionError:  # a mount point the operator owns; the files are 0600
            pass

    def upload(self) -> Upload:
        return Upload(self.folder)

    def write(self, file_id: str, data: bytes) -> None:
        """The whole of a file at once (a batch's output), atomically as an upload."""
        upload = self.upload()
        try:
            upload.write(data)
            upload.commit(file_id)
        except BaseException:
            upload.discard()
            raise

    def open(self, file_id: str) -> BinaryIO:
        """The file's bytes; FileNotFoundError when there are none."""
        return open(_path(self.folder, file_id), "rb")

    def remove(self, file_id: str) -> None:
        _path(self.folder, file_id).unlink(missing_ok=True)

    def sweep_uploads(self, now: float | None = None, older_than_s: float = STALE_UPLOAD_S,
                      ) -> int:
        """Remove uploads' temporary files left by processes that died; how many."""
        now = time.time() if now is None else now
        removed = 0
        for path in self.folder.glob(f"{_TEMP_PREFIX}*"):
            try:
                if now - path.stat().st_mtime > older_than_s:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass  # another replica swept it first
        return removed


def _path(folder: Path, file_id: str) -> Path:
    if not is_file_id(file_id):  # only ids the platform made name a path
        raise ValueError(f"not a file id: {file_id!r}")
    return folder / file_id


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
