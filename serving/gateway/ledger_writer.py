"""Group commit for the usage ledger: each request awaits its own record's commit, and the
records that arrive while one transaction runs share the next one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from serving.tenancy import UsageRecord

logger = logging.getLogger(__name__)


class LedgerWriter:
    """`await write(record)` returns once the record is durable in the store. Under load a
    transaction carries many records, so the ledger costs one commit per batch, not per
    request; a finished request's record is committed before its response ends."""

    def __init__(self, record_usage: Callable[[Iterable[UsageRecord]], int],
                 max_batch: int = 256) -> None:
        self._record_usage = record_usage
        self._max_batch = max_batch
        self._pending: list[tuple[UsageRecord, asyncio.Future]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None

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
                try:
                    await asyncio.to_thread(self._record_usage, [r for r, _ in batch])
                except Exception as exc:  # the callers see it; nothing is dropped silently
                    logger.exception("ledger write failed for %d records", len(batch))
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
