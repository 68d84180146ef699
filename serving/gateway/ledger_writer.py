"""Group commit for the usage ledger: each request awaits its own record's commit, and the
records that arrive while one transaction runs share the next one. When the store cannot be
reached the batch goes to a local spool instead (durable on this node's disk) and is
replayed into the store once it answers again: a record is never dropped.

A batch the store *refuses* (a row it will never take, not an outage) is split until the
refused rows stand alone: the others are committed, and each refused row goes to the spool's
dead-letter file with the store's reason, is counted (`aifactory_ledger_dead_letters`) and
logged. One bad row can never hold back the rows beside it, in a batch or in a replay."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from serving.tenancy import ErrorClass, Outcome, UsageRecord

logger = logging.getLogger(__name__)

REPLAY_FIRST_S = 0.5
REPLAY_MAX_S = 10.0
DEAD_LETTER_DIR = "dead-letter"


def store_refuses(exc: BaseException) -> bool:
    """Whether the store refused the rows themselves (it would refuse them again), rather
    than not being reachable: validation, data and integrity errors, not connection ones."""
    from sqlalchemy.exc import DataError, IntegrityError

    from serving.tenancy import TenancyError

    if isinstance(exc, (TenancyError, DataError, IntegrityError)):
        return True
    return isinstance(exc, (ValueError, TypeError, UnicodeError))


def commit_splitting(record_usage: Callable[[Iterable[UsageRecord]], int],
                     records: list[UsageRecord],
                     refused: Callable[[UsageRecord, BaseException], None]) -> int:
    """Commit `records`; a batch the store refuses is halved until each refused record stands
    alone and goes to `refused`. An unreachable store raises, for the caller to spool.
    Returns the records the store took."""
    try:
        return record_usage(records)
    except Exception as exc:
        if not store_refuses(exc):
            raise
        if len(records) == 1:
            refused(records[0], exc)
            return 0
        middle = len(records) // 2
        return (commit_splitting(record_usage, records[:middle], refused)
                + commit_splitting(record_usage, records[middle:], refused))


class LedgerSpool:
    """Records the store could not take, one file per failed batch (JSON lines), written to
    a temporary name, fsynced and renamed so a file is either whole or absent. Replaying
    is safe to repeat: the store skips request ids it already has."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def append(self, records: list[UsageRecord]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{datetime.now().strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.jsonl"
        final = self.directory / name
        partial = final.with_suffix(".partial")
        with open(partial, "w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(_to_json(record)) + "\n")
            out.flush()
            os.fsync(out.fileno())
        partial.rename(final)
        _fsync_dir(self.directory)
        return final

    def batches(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*.jsonl"))

    def read(self, batch: Path) -> list[UsageRecord]:
        """A spooled batch's records; a line that no longer parses is dead-lettered."""
        records = []
        with open(batch, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if not line.strip():
                    continue
                try:
                    records.append(_from_json(json.loads(line)))
                except (ValueError, TypeError, KeyError) as exc:
                    self.dead_letter_line(line, exc)
        return records

    def dead_letter(self, record: UsageRecord, reason: BaseException) -> Path:
        return self._append_dead_letter({"record": _to_json(record), "reason": repr(reason)})

    def dead_letter_line(self, line: str, reason: BaseException) -> Path:
        return self._append_dead_letter({"line": line.rstrip("\n"), "reason": repr(reason)})

    def _append_dead_letter(self, entry: dict) -> Path:
        folder = self.directory / DEAD_LETTER_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{datetime.now().strftime('%Y%m%d')}.jsonl"
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"at": datetime.now().isoformat(), **entry}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        return path

    def dead_letters(self) -> list[dict]:
        folder = self.directory / DEAD_LETTER_DIR
        if not folder.is_dir():
            return []
        return [json.loads(line) for path in sorted(folder.glob("*.jsonl"))
                for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def replay(self, commit: Callable[[list[UsageRecord]], int]) -> int:
        """Move every spooled batch into the store, oldest first, with `commit` (which
        dead-letters what the store refuses); stops at the first outage (raised). Returns
        the records replayed."""
        replayed = 0
        for batch in self.batches():
            try:
                records = self.read(batch)
            except FileNotFoundError:  # another replica on this node replayed it first
                continue
            commit(records)
            batch.unlink(missing_ok=True)
            replayed += len(records)
        return replayed


def _to_json(record: UsageRecord) -> dict:
    raw = asdict(record)
    raw["outcome"] = record.outcome.value
    raw["created_at"] = record.created_at.isoformat()
    raw["finished_at"] = None if record.finished_at is None else record.finished_at.isoformat()
    return raw


def _from_json(raw: dict) -> UsageRecord:
    finished = raw.get("finished_at")
    error_class = raw.get("error_class")
    return UsageRecord(**{**raw, "outcome": Outcome(raw["outcome"]),
                          "error_class": None if error_class is None
                          else ErrorClass(error_class),
                          "created_at": datetime.fromisoformat(raw["created_at"]),
                          "finished_at": None if finished is None
                          else datetime.fromisoformat(finished)})


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LedgerWriter:
    """`await write(record)` returns once the record is durable: in the store, or, while the
    store is unreachable, in the spool. Under load a transaction carries many records, so the
    ledger costs one commit per batch, not per request; a finished request's record is durable
    before its response ends."""

    def __init__(self, record_usage: Callable[[Iterable[UsageRecord]], int],
                 max_batch: int = 256, spool: LedgerSpool | None = None,
                 on_dead_letter: Callable[[UsageRecord], None] | None = None) -> None:
        """`on_dead_letter` is told of each record the store refused (a metric)."""
        self._record_usage = record_usage
        self._on_dead_letter = on_dead_letter
        self.dead_letters = 0
        self._max_batch = max_batch
        self._spool = spool
        self._pending: list[tuple[UsageRecord, asyncio.Future]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._replaying: asyncio.Task | None = None

    def _commit(self, records: list[UsageRecord]) -> int:
        return commit_splitting(self._record_usage, records, self._refused)

    def _refused(self, record: UsageRecord, reason: BaseException) -> None:
        """A record the store will never take: kept aside, counted and said, never silent."""
        self.dead_letters += 1
        where = "nowhere (no spool)"
        if self._spool is not None:
            try:
                where = str(self._spool.dead_letter(record, reason))
            except OSError:
                logger.exception("the dead-letter file cannot be written")
        logger.error("the store refuses usage record %s of tenant %s (%r); kept in %s",
                     record.request_id, record.tenant, reason, where)
        if self._on_dead_letter is not None:
            self._on_dead_letter(record)

    @property
    def spooled_batches(self) -> int:
        return len(self._spool.batches()) if self._spool is not None else 0

    def start_replay(self) -> None:
        """Replay what an earlier process left in the spool (and keep trying until done)."""
        if self._spool is None or (self._replaying is not None and not self._replaying.done()):
            return
        if self._spool.batches():
            self._replaying = asyncio.get_running_loop().create_task(self._replay())

    async def write(self, record: UsageRecord) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        done = asyncio.get_running_loop().create_future()
        self._pending.append((record, done))
        self._wakeup.set()
        # Shielded: a cancelled request (client gone) must still get its record committed.
        await asyncio.shield(done)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = (self._pending[: self._max_batch],
                                        self._pending[self._max_batch:])
                records = [r for r, _ in batch]
                try:
                    if self.spooled_batches:  # keep the ledger's order: older records first
                        raise RuntimeError("spooled records wait for replay")
                    await asyncio.to_thread(self._commit, records)
                except Exception as exc:
                    if not await self._spool_batch(records, exc):
                        for _, done in batch:  # the callers see it; nothing dropped silently
                            if not done.done():
                                done.set_exception(exc)
                        continue
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def _spool_batch(self, records: list[UsageRecord], cause: Exception) -> bool:
        if self._spool is None:
            logger.error("ledger write failed for %d records: %r", len(records), cause)
            return False
        try:
            path = await asyncio.to_thread(self._spool.append, records)
        except OSError:
            logger.exception("ledger write failed and the spool too, for %d records",
                             len(records))
            return False
        if "spooled records wait" not in str(cause):
            logger.warning("store unreachable (%r): %d usage records spooled to %s",
                           cause, len(records), path)
        self.start_replay()
        return True

    async def _replay(self) -> None:
        delay = REPLAY_FIRST_S
        while self._spool.batches():
            await asyncio.sleep(delay)
            try:
                count = await asyncio.to_thread(self._spool.replay, self._commit)
                logger.warning("store reachable again: %d spooled usage records replayed", count)
            except Exception as exc:
                logger.info("spool replay waits for the store: %r", exc)
                delay = min(delay * 2, REPLAY_MAX_S)
