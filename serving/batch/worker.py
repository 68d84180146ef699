"""The batch worker one gateway replica runs: every tick it moves each unfinished batch along
OpenAI's status machine (writing the output and error files when one ends) and sends queued
lines to their endpoints as far as `room` allows, each through the gateway's own steps
(`run_line`). Lines are claimed under a lease renewed while they run; a replica that dies
leaves its lines to be claimed again when the lease runs out, and the ledger keys each line
by one request id, so no line is lost and none is recorded twice."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from observability import metrics
from serving.batch import batch_store as batches
from serving.batch.batch_store import Batch, ClaimedLine
from serving.batch.lifecycle import BatchStatus, may_send, next_step
from serving.batch.output import output_files
from serving.event_wait import wait_event

logger = logging.getLogger(__name__)

TICK_S = 0.25  # how soon a line follows room on its endpoint, and a batch its lines' ends
MIN_TICK_GAP_S = 0.02  # a line's end brings the next tick forward, to no less than this
LEASE = timedelta(seconds=20)  # a dead replica's lines are taken over this long after
RENEW_EVERY_S = 5.0  # a live replica's leases never run out
MIN_DEFER_S = 0.5  # a deferred line (and its tenant's other lines) waits at least this long


class BatchFiles(Protocol):
    """Where a batch's output and error files go (the Files API's store)."""

    def write(self, tenant: str, filename: str, data: bytes) -> str: ...

    def delete(self, tenant: str, file_id: str) -> bool: ...


@dataclass(frozen=True)
class LineResult:
    """A line's answer; or, with `retry_after_s`, none yet: the line is to be sent again
    that much later (its tenant's rate limit refused it, nothing was recorded)."""

    status: int
    body: dict[str, Any]
    request_id: str
    retry_after_s: float | None = None

    @classmethod
    def deferred(cls, request_id: str, retry_after_s: float) -> LineResult:
        return cls(429, {}, request_id, max(retry_after_s, MIN_DEFER_S))


RunLine = Callable[[ClaimedLine], Awaitable[LineResult]]


class BatchWorker:
    """`room(model)`: how many more lines this replica may send to that endpoint now;
    `sent(model, +1/-1)` tells it of a line sent and ended."""

    def __init__(self, store, files: BatchFiles, run_line: RunLine,
                 room: Callable[[str], int], owner: str, *, tick_s: float = TICK_S,
                 lease: timedelta = LEASE) -> None:
        self.store = store
        self.files = files
        self.run_line = run_line
        self.room = room
        self.owner = owner
        self.tick_s = tick_s
        self.lease = lease
        self.running: dict[str, dict[int, asyncio.Task]] = {}
        self.paused_until: dict[str, float] = {}  # tenant -> monotonic time its limits allow
        self._reported: set[tuple[str, str]] = set()
        self._renewed_at = time.monotonic()
        self._line_ended = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batch-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for lines in self.running.values():
            for task in lines.values():
                task.cancel()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store away: try again next tick, nothing is lost
                logger.warning("batch worker tick failed: %r", exc)
            await self._until_next_tick()

    async def _until_next_tick(self) -> None:
        """A tick's time, or less once a line has ended (its room is free again: with few
        lines allowed, waiting out the tick would leave the engine idle), never less than
        MIN_TICK_GAP_S apart."""
        self._line_ended.clear()
        await asyncio.sleep(MIN_TICK_GAP_S)
        await wait_event(self._line_ended, self.tick_s - MIN_TICK_GAP_S)

    async def tick(self) -> None:
        live = await asyncio.to_thread(batches.unfinished, self.store)
        for batch in live:
            await self._advance(batch)
            now = self.store._now()
            if may_send(batch.status, now, batch.expires_at):
                await self._send(batch)
        if time.monotonic() - self._renewed_at >= RENEW_EVERY_S:
            self._renewed_at = time.monotonic()
            for batch_id, lines in self.running.items():
                await asyncio.to_thread(batches.renew, self.store, self.owner, batch_id,
                                        list(lines), self.lease)
            await asyncio.to_thread(self._report_pending)

    def _report_pending(self) -> None:
        """aifactory_batch_lines_pending from the store; a tenant's figure that is gone is
        set to 0 rather than left at its last value."""
        pending = batches.pending_by_tenant(self.store)
        for tenant, state in self._reported - set(pending):
            metrics.set_gauge("aifactory_batch_lines_pending", {"tenant": tenant,
                                                                "state": state}, 0)
        for (tenant, state), lines in pending.items():
            metrics.set_gauge("aifactory_batch_lines_pending", {"tenant": tenant,
                                                                "state": state}, lines)
        self._reported = set(pending)

    async def _send(self, batch: Batch) -> None:
        if self.paused_until.get(batch.tenant, 0.0) > time.monotonic():
            return  # its rate limits refused a line: none of its lines until they allow
        model = await asyncio.to_thread(self._model_of, batch)
        limit = self.room(model) if model is not None else 0
        if limit <= 0:
            return
        claimed = await asyncio.to_thread(batches.claim, self.store, self.owner, batch, limit,
                                          self.lease)
        for line in claimed:
            task = asyncio.get_running_loop().create_task(self._answer(line))
            self.running.setdefault(batch.id, {})[line.line] = task

    def _model_of(self, batch: Batch) -> str | None:
        """The endpoint its queued lines name (a batch's lines name one model, usually)."""
        return batches.next_model(self.store, batch.id)

    async def _answer(self, line: ClaimedLine) -> None:
        try:
            result = await self.run_line(line)
            if result.retry_after_s is not None:
                await self._defer(line, result.retry_after_s)
                return
            await asyncio.to_thread(batches.record, self.store, self.owner, line.batch_id,
                                    line.line, result.status, result.body, result.request_id)
        except asyncio.CancelledError:
            raise  # this replica stops: the lease runs out and another takes the line
        except Exception as exc:  # left to the lease: the line is sent again, not lost
            logger.warning("batch %s line %d failed to run: %r", line.batch_id, line.line, exc)
        finally:
            self.running.get(line.batch_id, {}).pop(line.line, None)
            self._line_ended.set()

    async def _defer(self, line: ClaimedLine, retry_after_s: float) -> None:
        resume = time.monotonic() + retry_after_s
        self.paused_until[line.tenant] = max(self.paused_until.get(line.tenant, 0.0), resume)
        until = self.store._now() + timedelta(seconds=retry_after_s)
        await asyncio.to_thread(batches.defer, self.store, self.owner, line.batch_id,
                                line.line, until)

    async def _advance(self, batch: Batch) -> None:
        progress, _, _ = await asyncio.to_thread(batches.counts, self.store, batch.id)
        step = next_step(batch.status, progress, self.store._now(), batch.expires_at)
        if step is None:
            return
        output_id = error_id = None
        if step.write_files:
            output_id, error_id = await asyncio.to_thread(self._write_files, batch, step.status)
        moved = await asyncio.to_thread(batches.advance, self.store, batch.id, batch.status,
                                        step.status, output_file_id=output_id,
                                        error_file_id=error_id)
        if moved:
            logger.info("batch %s: %s -> %s", batch.id, batch.status, step.status)
            return
        # Another replica moved it first, with files of its own: these are nobody's.
        for file_id in (output_id, error_id):
            if file_id is not None:
                await asyncio.to_thread(self.files.delete, batch.tenant, file_id)

    def _write_files(self, batch: Batch, status: BatchStatus) -> tuple[str | None, str | None]:
        ended = batches.ended_lines(self.store, batch.id)
        never_ran = batches.unended_custom_ids(self.store, batch.id)
        output, errors = output_files(batch.id, ended, never_ran, status)
        output_id = self.files.write(batch.tenant, f"{batch.id}_output.jsonl", output) \
            if output else None
        error_id = self.files.write(batch.tenant, f"{batch.id}_error.jsonl", errors) \
            if errors else None
        return output_id, error_id
