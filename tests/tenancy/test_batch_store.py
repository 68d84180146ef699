"""Batches and their lines on the real store (SQLite and PostgreSQL): a batch is its tenant's
alone; lines are claimed under leases, taken over when a replica's lease runs out, and end
exactly once; the status moves as OpenAI's machine says, each move made by one replica."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest
import sqlalchemy as sa

from serving.batch import batch_store as batches
from serving.batch.batch_input import BatchLine, LineError
from serving.batch.lifecycle import BatchStatus, Progress
from serving.tenancy import Store

LEASE = timedelta(seconds=30)


@pytest.fixture
def tenants(store):
    store.create_tenant("acme")
    store.create_tenant("globex")


def lines(n: int) -> list[BatchLine]:
    return [BatchLine(i, f"req-{i}", {"model": "demo", "prompt": f"p{i}"})
            for i in range(1, n + 1)]


def make(store, n: int = 3, tenant: str = "acme") -> batches.Batch:
    return batches.create(store, tenant=tenant, key_prefix="afk_abcdefgh",
                          endpoint="/v1/completions", input_file_id="file-x", lines=lines(n),
                          errors=[], metadata={"job": "nightly"})


def test_a_batch_is_its_tenants_alone_and_reads_as_openais_object(store, tenants):
    batch = make(store)
    assert batches.find(store, "acme", batch.id) == batch
    assert batches.find(store, "globex", batch.id) is None
    assert batches.find(store, "acme", "batch_../../x") is None
    assert batches.cancel(store, "globex", batch.id) is None
    body = batch.as_json(completed=0, failed=0)
    assert (body["object"], body["status"], body["request_counts"]) == (
        "batch", "in_progress", {"total": 3, "completed": 0, "failed": 0})
    assert body["expires_at"] - body["created_at"] == 24 * 3600
    assert body["in_progress_at"] == body["created_at"] and body["completed_at"] is None
    assert body["metadata"] == {"job": "nightly"} and body["errors"] is None


def test_a_batch_with_input_errors_fails_with_them_and_has_no_lines(store, tenants):
    batch = batches.create(store, tenant="acme", key_prefix="afk_abcdefgh",
                           endpoint="/v1/completions", input_file_id="file-x", lines=[],
                           errors=[LineError("duplicate_custom_id", "again", 2, "custom_id")])
    body = batch.as_json(0, 0)
    assert body["status"] == "failed" and body["failed_at"] is not None
    assert body["errors"]["data"] == [{"code": "duplicate_custom_id", "message": "again",
                                       "param": "custom_id", "line": 2}]
    assert batches.counts(store, batch.id)[0] == Progress(0, 0, 0)


def test_lines_are_claimed_once_answered_once_and_taken_over_after_a_lease(store, tenants,
                                                                           clock):
    batch = make(store, 5)
    first = batches.claim(store, "gw-1", batch, 3, LEASE)
    second = batches.claim(store, "gw-2", batch, 10, LEASE)
    assert [c.line for c in first] == [1, 2, 3] and [c.line for c in second] == [4, 5]
    assert first[0].body == {"model": "demo", "prompt": "p1"} and first[0].kind == "completion"
    assert batches.claim(store, "gw-3", batch, 10, LEASE) == []
    assert batches.record(store, "gw-1", batch.id, 1, 200, {"id": "cmpl-1"}, "r1")
    assert not batches.record(store, "gw-2", batch.id, 1, 200, {"id": "again"}, "r1")
    batches.release(store, "gw-2", batch.id, [5])  # no room on its endpoint: queued again
    assert batches.counts(store, batch.id)[0] == Progress(queued=1, running=3, ended=1)

    clock.advance(seconds=10)
    batches.renew(store, "gw-1", batch.id, [2, 3], LEASE)
    clock.advance(seconds=25)  # gw-2's lease on line 4 ran out (it died); gw-1 renewed
    taken = batches.claim(store, "gw-3", batch, 10, LEASE)
    assert [c.line for c in taken] == [4, 5]
    assert not batches.record(store, "gw-2", batch.id, 4, 200, {"id": "late"}, "r4")
    for owner, line in (("gw-1", 2), ("gw-1", 3), ("gw-3", 4)):
        assert batches.record(store, owner, batch.id, line, 200, {"id": f"c{line}"}, f"r{line}")
    assert batches.record(store, "gw-3", batch.id, 5, 400, {"error": {"message": "no"}}, "r5")
    progress, completed, failed = batches.counts(store, batch.id)
    assert (progress, completed, failed) == (Progress(0, 0, 5), 4, 1)
    ended = batches.ended_lines(store, batch.id)
    assert [(e.line, e.custom_id, e.status_code) for e in ended] == [
        (1, "req-1", 200), (2, "req-2", 200), (3, "req-3", 200), (4, "req-4", 200),
        (5, "req-5", 400)]
    assert ended[3].answer == {"id": "c4"}  # the replica that held the line answered it


def test_a_deferred_line_waits_unowned_then_any_replica_takes_it(store, tenants, clock):
    """A line refused by its tenant's rate limit: put back until the limit lets it through,
    never recorded meanwhile, then claimed again (by any replica) and answered once."""
    batch = make(store, 2)
    [line, _] = batches.claim(store, "gw-1", batch, 2, LEASE)
    assert not batches.defer(store, "gw-2", batch.id, 1, clock() + timedelta(seconds=5))
    assert batches.defer(store, "gw-1", batch.id, 1, clock() + timedelta(seconds=5))
    assert not batches.record(store, "gw-1", batch.id, 1, 200, {"id": "late"}, "r1")
    batches.renew(store, "gw-1", batch.id, [1], LEASE)  # not its owner's any more
    assert batches.claim(store, "gw-2", batch, 10, LEASE) == []
    assert batches.pending_by_tenant(store) == {("acme", "queued"): 1, ("acme", "running"): 1}
    clock.advance(seconds=6)
    [again] = batches.claim(store, "gw-2", batch, 10, LEASE)
    assert (again.line, again.custom_id) == (line.line, line.custom_id)
    assert batches.record(store, "gw-2", batch.id, 1, 200, {"id": "c1"}, "r1")
    assert batches.pending_by_tenant(store) == {("acme", "running"): 1}


def test_pending_lines_are_counted_per_tenant_over_unfinished_batches(store, tenants):
    acme, globex, done = make(store, 3), make(store, 2, tenant="globex"), make(store, 4)
    batches.claim(store, "gw-1", acme, 1, LEASE)
    batches.cancel(store, "acme", done.id)
    assert batches.advance(store, done.id, BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    assert batches.pending_by_tenant(store) == {
        ("acme", "queued"): 2, ("acme", "running"): 1, ("globex", "queued"): 2}
    assert globex.tenant == "globex"


def test_status_moves_once_and_cancel_follows_openai(store, tenants):
    batch = make(store)
    assert batches.advance(store, batch.id, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING)
    assert not batches.advance(store, batch.id, BatchStatus.IN_PROGRESS,
                               BatchStatus.FINALIZING)  # another replica was first
    cancelled = batches.cancel(store, "acme", batch.id)
    assert cancelled.status is BatchStatus.CANCELLING
    assert batches.advance(store, batch.id, BatchStatus.CANCELLING, BatchStatus.CANCELLED,
                           output_file_id="file-out")
    done = batches.find(store, "acme", batch.id)
    assert done.status is BatchStatus.CANCELLED and done.output_file_id == "file-out"
    assert done.as_json(0, 0)["cancelled_at"] is not None
    assert batches.cancel(store, "acme", batch.id) is BatchStatus.CANCELLED
    assert [b.id for b in batches.unfinished(store)] == []


def test_pages_newest_first_and_per_tenant(store, tenants, clock):
    made = []
    for _ in range(5):
        made.append(make(store, 1))
        clock.advance(seconds=1)
    make(store, 1, tenant="globex")
    first, more = batches.page(store, "acme", after=None, limit=2)
    assert [b.id for b in first] == [made[4].id, made[3].id] and more
    rest, more = batches.page(store, "acme", after=first[-1].id, limit=10)
    assert [b.id for b in rest] == [made[2].id, made[1].id, made[0].id] and not more
    assert batches.page(store, "globex", after=made[0].id, limit=10) == ([], False)


def sqlite_steps(store, action) -> int:
    """SQLite virtual-machine steps (in hundreds) `action` costs the store: what it reads,
    counted rather than timed."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0  # 0: go on

    def watch(dbapi_connection, record, proxy) -> None:
        dbapi_connection.set_progress_handler(count, 100)

    def unwatch(dbapi_connection, record) -> None:
        dbapi_connection.set_progress_handler(None, 100)

    sa.event.listen(store.engine, "checkout", watch)
    sa.event.listen(store.engine, "checkin", unwatch)
    try:
        action()
    finally:
        sa.event.remove(store.engine, "checkout", watch)
        sa.event.remove(store.engine, "checkin", unwatch)
    return steps


def test_a_worker_ticks_reads_do_not_grow_as_its_batch_progresses(migrated_sqlite, tmp_path,
                                                                   clock):
    """What a worker asks every tick (progress, the next line's model, a claim) reads the
    same whether none or most of a batch's lines have ended: with 2,000 lines it read each
    ended line's row and took up to 20 times as long at 90% (benchmarks showed the
    interactive tenant beside it paying for that on two cores)."""
    path = tmp_path / "steps.db"
    shutil.copy(migrated_sqlite, path)
    store = Store(f"sqlite:///{path}", clock=clock)
    try:
        store.create_tenant("acme")
        batch = make(store, 2_000)

        def tick() -> None:
            batches.counts(store, batch.id)
            batches.next_model(store, batch.id)
            [line] = batches.claim(store, "gw-1", batch, 1, LEASE)
            assert batches.record(store, "gw-1", batch.id, line.line, 200,
                                  {"id": "c", "choices": [{"text": "x" * 200}]}, "r")

        fresh = sqlite_steps(store, tick)
        for _ in range(1_800):
            tick()
        assert batches.counts(store, batch.id) == (Progress(199, 0, 1_801), 1_801, 0)
        late = sqlite_steps(store, tick)
    finally:
        store.close()
    assert fresh > 0 and late <= 1.5 * fresh, (fresh, late)
