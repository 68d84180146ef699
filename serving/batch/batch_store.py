"""Batches and their lines in the platform's store. A batch belongs to its tenant (another
tenant's id is as missing as one that never existed). Its lines are claimed by gateway
replicas under a lease: a line whose replica died is claimed again when the lease runs out,
and an answer is recorded only by the replica that holds the line, so each line ends exactly
once however often it was sent."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import and_, func, or_, select, update

from serving.batch.batch_input import BATCH_ENDPOINTS, BatchLine, LineError
from serving.batch.lifecycle import BatchStatus, Progress, after_cancel
from serving.tenancy import audit
from serving.tenancy import validation as check
from serving.tenancy.models import BatchLineRow, BatchRow

COMPLETION_WINDOW = timedelta(hours=24)  # OpenAI's only window, "24h"
BATCH_ID = re.compile(r"^batch_[0-9a-f]{32}$")
QUEUED, RUNNING, ENDED = "queued", "running", "ended"
_INSERT_CHUNK = 1000
_MOVE_ATTEMPTS = 5  # a cancel re-reads a batch whose status moved under it this often


@dataclass(frozen=True)
class Batch:
    id: str
    tenant: str
    key_prefix: str
    endpoint: str
    input_file_id: str
    status: BatchStatus
    created_at: datetime
    expires_at: datetime
    moments: dict[str, str]
    output_file_id: str | None
    error_file_id: str | None
    errors: list[dict[str, Any]] | None
    metadata: dict[str, str] | None
    total: int

    @property
    def kind(self) -> str:
        return BATCH_ENDPOINTS[self.endpoint]

    def as_json(self, completed: int, failed: int) -> dict[str, Any]:
        """OpenAI's Batch object."""
        def at(status: str) -> int | None:
            moment = self.moments.get(status)
            return None if moment is None else int(datetime.fromisoformat(moment).timestamp())

        return {
            "id": self.id, "object": "batch", "endpoint": self.endpoint,
            "errors": None if not self.errors else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id, "completion_window": "24h",
            "status": self.status.value, "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at.timestamp()),
            "in_progress_at": at("in_progress"), "expires_at": int(self.expires_at.timestamp()),
            "finalizing_at": at("finalizing"), "completed_at": at("completed"),
            "failed_at": at("failed"), "expired_at": at("expired"),
            "cancelling_at": at("cancelling"), "cancelled_at": at("cancelled"),
            "request_counts": {"total": self.total, "completed": completed, "failed": failed},
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class ClaimedLine:
    batch_id: str
    tenant: str
    key_prefix: str
    kind: str
    line: int
    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class EndedLine:
    line: int
    custom_id: str
    status_code: int
    answer: dict[str, Any]
    request_id: str | None


def is_batch_id(value: object) -> bool:
    return isinstance(value, str) and BATCH_ID.fullmatch(value) is not None


def create(store, *, tenant: str, key_prefix: str, endpoint: str, input_file_id: str,
           lines: Sequence[BatchLine], errors: Sequence[LineError],
           metadata: dict[str, str] | None = None) -> Batch:
    """A new batch: in progress with its lines queued, or failed in validation with its
    errors (and no line) when the input had any."""
    now = store._now()
    tenant = check.name("tenant", tenant)
    status = BatchStatus.FAILED if errors else BatchStatus.IN_PROGRESS
    row = BatchRow(id=f"batch_{secrets.token_hex(16)}", tenant=tenant, key_prefix=key_prefix,
                   endpoint=endpoint, input_file_id=input_file_id, completion_window="24h",
                   status=status.value, created_at=now, expires_at=now + COMPLETION_WINDOW,
                   moments={status.value: now.isoformat()}, output_file_id=None,
                   error_file_id=None, errors=[e.as_json() for e in errors] or None,
                   batch_metadata=metadata, total=0 if errors else len(lines))
    with store._tx() as s:
        s.add(row)
        s.flush()
        rows = [{"batch_id": row.id, "line": x.line, "custom_id": x.custom_id, "body": x.body,
                 "state": QUEUED} for x in ([] if errors else lines)]
        for start in range(0, len(rows), _INSERT_CHUNK):
            s.execute(BatchLineRow.__table__.insert(), rows[start:start + _INSERT_CHUNK])
        return _batch(row)


# `tenant` below is whose batches a caller may see: a tenant's own, or None for the
# platform's operators, who see every tenant's.


def _visible(row: BatchRow | None, tenant: str | None) -> bool:
    return row is not None and (tenant is None or row.tenant == tenant)


def find(store, tenant: str | None, batch_id: str) -> Batch | None:
    if not is_batch_id(batch_id):
        return None
    with store._tx() as s:
        row = s.get(BatchRow, batch_id)
        return _batch(row) if _visible(row, tenant) else None


def page(store, tenant: str | None, *, after: str | None, limit: int,
         statuses: Sequence[BatchStatus] = ()) -> tuple[list[Batch], bool]:
    """The tenant's batches (every tenant's for None), only those in `statuses` if any are
    given, newest first, after the batch `after` (OpenAI's cursor); and whether more
    follow."""
    with store._tx() as s:
        query = select(BatchRow)
        if tenant is not None:
            query = query.where(BatchRow.tenant == tenant)
        if statuses:
            query = query.where(BatchRow.status.in_([status.value for status in statuses]))
        if after is not None:
            cursor = s.get(BatchRow, after) if is_batch_id(after) else None
            if not _visible(cursor, tenant):
                return [], False
            query = query.where(or_(BatchRow.created_at < cursor.created_at,
                                    and_(BatchRow.created_at == cursor.created_at,
                                         BatchRow.id < cursor.id)))
        rows = s.scalars(query.order_by(BatchRow.created_at.desc(), BatchRow.id.desc())
                         .limit(limit + 1)).all()
        return [_batch(r) for r in rows[:limit]], len(rows) > limit


def cancel(store, tenant: str | None, batch_id: str) -> Batch | None | BatchStatus:
    """The batch after a cancel request; None when the tenant has no such batch; its status
    when it can no longer be cancelled. A store acting for an operator or a tenant's admin
    (`Store.acting_as`) records the move in the audit log, in the move's transaction."""
    if not is_batch_id(batch_id):
        return None
    for _ in range(_MOVE_ATTEMPTS):
        with store._tx() as s:
            row = s.get(BatchRow, batch_id)
            if not _visible(row, tenant):
                return None
            status = BatchStatus(row.status)
            after = after_cancel(status)
            if after is None:
                return status
            now = store._now()
            if after is status or _move(s, row, after, now):
                if after is not status and store.actor is not None:
                    audit.append(s, store.actor, now, audit.Change(
                        "batch.cancel", f"batch/{row.id}", row.tenant,
                        {"status": status.value}, {"status": after.value}))
                s.refresh(row)
                return _batch(row)
    raise RuntimeError(f"batch {batch_id} keeps changing status under a cancel")


def counts(store, batch_id: str) -> tuple[Progress, int, int]:
    """Its lines' progress, and of those ended how many completed (200) and failed.

    One grouped query on the (batch_id, state, status_code) index alone: every worker tick
    asks it, and reading the ended lines' rows made it grow with the batch's progress."""
    with store._tx() as s:
        rows = s.execute(select(BatchLineRow.state, BatchLineRow.status_code, func.count())
                         .where(BatchLineRow.batch_id == batch_id)
                         .group_by(BatchLineRow.state, BatchLineRow.status_code)).all()
    by_state: dict[str, int] = {}
    completed = 0
    for state, status_code, lines in rows:
        by_state[state] = by_state.get(state, 0) + lines
        if state == ENDED and status_code == 200:
            completed += lines
    ended = by_state.get(ENDED, 0)
    return (Progress(queued=by_state.get(QUEUED, 0), running=by_state.get(RUNNING, 0),
                     ended=ended), completed, ended - completed)


def unfinished(store) -> list[Batch]:
    """Every batch some replica still has work or a status change to do for."""
    live = [s.value for s in BatchStatus if not s.is_terminal]
    with store._tx() as s:
        return [_batch(r) for r in s.scalars(select(BatchRow).where(BatchRow.status.in_(live)))]


def pending_by_tenant(store) -> dict[tuple[str, str], int]:
    """{(tenant, queued|running): lines} over unfinished batches, one grouped query. A line
    waiting out its tenant's rate limit (`defer`) counts as queued."""
    live = [s.value for s in BatchStatus if not s.is_terminal]
    with store._tx() as s:
        rows = s.execute(
            select(BatchRow.tenant, BatchLineRow.state,
                   (BatchLineRow.lease_owner.is_(None)).label("unowned"), func.count())
            .join(BatchRow, BatchRow.id == BatchLineRow.batch_id)
            .where(BatchRow.status.in_(live), BatchLineRow.state != ENDED)
            .group_by(BatchRow.tenant, BatchLineRow.state, "unowned")).all()
    pending: dict[tuple[str, str], int] = {}
    for tenant, state, unowned, lines in rows:
        key = (tenant, QUEUED if state == QUEUED or unowned else RUNNING)
        pending[key] = pending.get(key, 0) + lines
    return pending


class ModelBacklog(NamedTuple):
    """Batch lines for one model (endpoint): still to be sent, and in its engines now."""

    queued: int
    running: int


def backlog_by_model(store) -> dict[str, ModelBacklog]:
    """{model: (queued, running)} over unfinished batches, one grouped query: the work the
    partition autoscaler may lend idle replicas to. Queued: lines that may still be sent
    (their batch in progress and within its window; one waiting out a rate limit, or whose
    replica died, counts); running: lines a live replica holds, whatever its batch's status
    (a cancelling batch waits for them)."""
    now = store._now()
    live = [s.value for s in BatchStatus if not s.is_terminal]
    held = and_(BatchLineRow.state == RUNNING, BatchLineRow.lease_owner.is_not(None),
                BatchLineRow.lease_until >= now)
    sendable = and_(BatchRow.status == BatchStatus.IN_PROGRESS.value, BatchRow.expires_at > now)
    with store._tx() as s:
        rows = s.execute(
            select(BatchLineRow.body["model"].as_string().label("model"),
                   held.label("held"), func.count())
            .join(BatchRow, BatchRow.id == BatchLineRow.batch_id)
            .where(BatchRow.status.in_(live), BatchLineRow.state != ENDED,
                   or_(held, sendable))
            .group_by("model", "held")).all()
    backlog: dict[str, ModelBacklog] = {}
    for model, running, lines in rows:
        if model is None:
            continue  # no model named: the route step answers it 400, no endpoint runs it
        queued, held_lines = backlog.get(model, ModelBacklog(0, 0))
        backlog[model] = (ModelBacklog(queued, held_lines + lines) if running
                          else ModelBacklog(queued + lines, held_lines))
    return backlog


def claim(store, owner: str, batch: Batch, limit: int, lease: timedelta) -> list[ClaimedLine]:
    """Up to `limit` of the batch's lines for `owner` until the lease ends: queued ones, or
    running ones whose lease ran out (their replica died). Each is taken by one replica
    only: a line another replica took first is left to it."""
    now = store._now()
    taken = []
    with store._tx() as s:
        first = _first_claimable(s, batch.id, now, limit)
        candidates = s.execute(
            select(BatchLineRow.line, BatchLineRow.custom_id, BatchLineRow.body)
            .where(BatchLineRow.batch_id == batch.id, BatchLineRow.line.in_(first))
            .order_by(BatchLineRow.line)).all() if first else []
        for line, custom_id, body in candidates:
            won = s.execute(
                update(BatchLineRow)
                .where(BatchLineRow.batch_id == batch.id, BatchLineRow.line == line,
                       _claimable(now))
                .values(state=RUNNING, lease_owner=owner, lease_until=now + lease)).rowcount
            if won == 1:
                taken.append(ClaimedLine(batch.id, batch.tenant, batch.key_prefix, batch.kind,
                                         line, custom_id, body))
    return taken


def next_model(store, batch_id: str) -> str | None:
    """The model its first claimable line names; None when none is."""
    now = store._now()
    with store._tx() as s:
        first = _first_claimable(s, batch_id, now, 1)
        body = None if not first else s.scalar(select(BatchLineRow.body).where(
            BatchLineRow.batch_id == batch_id, BatchLineRow.line == first[0]))
    return None if body is None else body.get("model")


def _first_claimable(s, batch_id: str, now: datetime, limit: int) -> list[int]:
    """The first `limit` claimable line numbers, in order, through the (batch_id, state,
    line) index: queued lines (from the index alone), and running ones (few: those in
    engines now, and deferred ones) whose lease ran out. One query with both conditions
    would walk the lines in order past every ended one, which every worker tick did, ever
    slower as a batch progressed."""
    queued = s.scalars(select(BatchLineRow.line)
                       .where(BatchLineRow.batch_id == batch_id, BatchLineRow.state == QUEUED)
                       .order_by(BatchLineRow.line).limit(limit)).all()
    lapsed = s.scalars(select(BatchLineRow.line)
                       .where(BatchLineRow.batch_id == batch_id, BatchLineRow.state == RUNNING,
                              BatchLineRow.lease_until < now)
                       .order_by(BatchLineRow.line).limit(limit)).all()
    return sorted([*queued, *lapsed])[:limit]


def renew(store, owner: str, batch_id: str, lines: Sequence[int], lease: timedelta) -> None:
    if not lines:
        return
    with store._tx() as s:
        s.execute(update(BatchLineRow)
                  .where(BatchLineRow.batch_id == batch_id, BatchLineRow.line.in_(lines),
                         BatchLineRow.state == RUNNING, BatchLineRow.lease_owner == owner)
                  .values(lease_until=store._now() + lease))


def release(store, owner: str, batch_id: str, lines: Sequence[int]) -> None:
    """Lines this owner took but will not send (its endpoint has no room): queued again."""
    if not lines:
        return
    with store._tx() as s:
        s.execute(update(BatchLineRow)
                  .where(BatchLineRow.batch_id == batch_id, BatchLineRow.line.in_(lines),
                         BatchLineRow.state == RUNNING, BatchLineRow.lease_owner == owner)
                  .values(state=QUEUED, lease_owner=None, lease_until=None))


def defer(store, owner: str, batch_id: str, line: int, until: datetime) -> bool:
    """A line its tenant's rate limit refused, put back untouched until `until`: unowned, its
    lease running to then, so any replica claims it after (and no ledger record was made)."""
    with store._tx() as s:
        return s.execute(
            update(BatchLineRow)
            .where(BatchLineRow.batch_id == batch_id, BatchLineRow.line == line,
                   BatchLineRow.state == RUNNING, BatchLineRow.lease_owner == owner)
            .values(lease_owner=None, lease_until=until)).rowcount == 1


def record(store, owner: str, batch_id: str, line: int, status_code: int,
           answer: dict[str, Any], request_id: str) -> bool:
    """The line's answer, if `owner` still holds it; whether it was recorded (a replica
    whose lease ran out and was taken over records nothing: the other's answer counts)."""
    with store._tx() as s:
        return s.execute(
            update(BatchLineRow)
            .where(BatchLineRow.batch_id == batch_id, BatchLineRow.line == line,
                   BatchLineRow.state == RUNNING, BatchLineRow.lease_owner == owner)
            .values(state=ENDED, status_code=status_code, answer=answer,
                    request_id=request_id, lease_owner=None, lease_until=None)).rowcount == 1


def ended_lines(store, batch_id: str) -> list[EndedLine]:
    with store._tx() as s:
        rows = s.execute(select(BatchLineRow.line, BatchLineRow.custom_id,
                                BatchLineRow.status_code, BatchLineRow.answer,
                                BatchLineRow.request_id)
                         .where(BatchLineRow.batch_id == batch_id, BatchLineRow.state == ENDED)
                         .order_by(BatchLineRow.line)).all()
    return [EndedLine(*row) for row in rows]


def unended_custom_ids(store, batch_id: str) -> list[tuple[int, str]]:
    """(line, custom_id) of the lines that never ended (a cancelled or expired batch's)."""
    with store._tx() as s:
        return [tuple(row) for row in s.execute(
            select(BatchLineRow.line, BatchLineRow.custom_id)
            .where(BatchLineRow.batch_id == batch_id, BatchLineRow.state != ENDED)
            .order_by(BatchLineRow.line)).all()]


def advance(store, batch_id: str, expected: BatchStatus, to: BatchStatus, *,
            output_file_id: str | None = None, error_file_id: str | None = None) -> bool:
    """Move the batch from `expected` to `to` (with its files); False when another replica
    moved it first, or a cancel came between."""
    files = {name: value for name, value in (("output_file_id", output_file_id),
                                             ("error_file_id", error_file_id)) if value}
    with store._tx() as s:
        row = s.get(BatchRow, batch_id)
        if row is None or row.status != expected.value:
            return False
        return _move(s, row, to, store._now(), **files)


def _move(s, row: BatchRow, to: BatchStatus, now: datetime, **values: Any) -> bool:
    """Compare and set: the batch moves to `to` only if its status is still the one `row`
    was read with. A conditional UPDATE, atomic on SQLite too, where FOR UPDATE locks
    nothing and two replicas could otherwise both move one batch (and both write files)."""
    moments = {**row.moments, to.value: now.isoformat()}
    return s.execute(
        update(BatchRow).where(BatchRow.id == row.id, BatchRow.status == row.status)
        .values(status=to.value, moments=moments, **values)
        .execution_options(synchronize_session=False)).rowcount == 1


def _claimable(now: datetime):
    """Queued, or running under a lease that ran out (its replica died)."""
    return or_(BatchLineRow.state == QUEUED,
               and_(BatchLineRow.state == RUNNING, BatchLineRow.lease_until < now))


def _batch(row: BatchRow) -> Batch:
    return Batch(id=row.id, tenant=row.tenant, key_prefix=row.key_prefix,
                 endpoint=row.endpoint, input_file_id=row.input_file_id,
                 status=BatchStatus(row.status), created_at=row.created_at,
                 expires_at=row.expires_at, moments=dict(row.moments),
                 output_file_id=row.output_file_id, error_file_id=row.error_file_id,
                 errors=row.errors, metadata=row.batch_metadata, total=row.total)
