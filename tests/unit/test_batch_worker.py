"""The batch worker's loop on a real SQLite store, with the engine call stood in for (the
end-to-end test runs it through the gateway): lines sent as far as room allows, a batch
finalized with OpenAI's output and error files, a cancel that waits for the running lines,
and a replica that dies mid-batch losing no line and duplicating none."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from serving.batch import batch_store as batches
from serving.batch.batch_input import BatchLine
from serving.batch.lifecycle import BatchStatus
from serving.batch.worker import MIN_TICK_GAP_S, BatchWorker, LineResult
from serving.tenancy import Store, upgrade
from tests.manual_clock import Clock


class Files:
    def __init__(self) -> None:
        self.saved: dict[str, tuple[str, bytes]] = {}

    def write(self, tenant: str, filename: str, data: bytes) -> str:
        file_id = f"file-{len(self.saved) + 1}"
        self.saved[file_id] = (tenant, data)
        return file_id

    def delete(self, tenant: str, file_id: str) -> bool:
        return self.saved.pop(file_id, None) is not None

    def lines(self, file_id: str) -> list[dict]:
        return [json.loads(x) for x in self.saved[file_id][1].splitlines()]


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 12, 4, 12, tzinfo=UTC))


@pytest.fixture
def store(tmp_path: Path, clock: Clock):
    url = f"sqlite:///{tmp_path}/batch.db"
    upgrade(url)
    store = Store(url, clock=clock)
    store.create_tenant("acme")
    yield store
    store.close()


def make(store, n: int) -> batches.Batch:
    lines = [BatchLine(i, f"req-{i}", {"model": "demo", "prompt": f"p{i}"})
             for i in range(1, n + 1)]
    return batches.create(store, tenant="acme", key_prefix="afk_abcdefgh",
                          endpoint="/v1/completions", input_file_id="file-in", lines=lines,
                          errors=[])


class Engine:
    """Answers line i with 200, except lines in `refuse` (400); `gate` holds answers back."""

    def __init__(self, refuse=()) -> None:
        self.refuse = set(refuse)
        self.sent: list[int] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, line) -> LineResult:
        self.sent.append(line.line)
        await self.gate.wait()
        if line.line in self.refuse:
            return LineResult(400, {"error": {"message": "bad", "code": None}}, f"r{line.line}")
        return LineResult(200, {"id": f"cmpl-{line.line}"}, f"r{line.line}")


async def settle(worker: BatchWorker, ticks: int = 20) -> None:
    for _ in range(ticks):
        await worker.tick()
        # A moment of real time: the lines' tasks record through threads, slower on a busy
        # machine than a bare turn of the loop.
        await asyncio.sleep(0.005)


async def test_a_batch_runs_within_its_room_and_ends_with_openais_files(store) -> None:
    batch, engine, files = make(store, 7), Engine(refuse={3}), Files()
    room = {"demo": 2}
    worker = BatchWorker(store, files, engine, lambda model: room.get(model, 0), "gw-1")
    engine.gate.clear()
    await worker.tick()
    await asyncio.sleep(0)
    assert engine.sent == [1, 2]  # no more than the endpoint's room
    engine.gate.set()
    await settle(worker)
    done = batches.find(store, "acme", batch.id)
    assert done.status is BatchStatus.COMPLETED and sorted(engine.sent) == list(range(1, 8))
    assert done.as_json(6, 1)["finalizing_at"] is not None
    output, errors = files.lines(done.output_file_id), files.lines(done.error_file_id)
    assert [x["custom_id"] for x in output] == ["req-1", "req-2", "req-4", "req-5", "req-6",
                                                "req-7"]
    assert output[0]["response"] == {"status_code": 200, "request_id": "r1",
                                     "body": {"id": "cmpl-1"}} and output[0]["error"] is None
    assert [(x["custom_id"], x["response"]["status_code"]) for x in errors] == [("req-3", 400)]
    assert files.saved[done.output_file_id][0] == "acme"


async def test_no_room_sends_nothing(store) -> None:
    make(store, 3)
    engine = Engine()
    await settle(BatchWorker(store, Files(), engine, lambda model: 0, "gw-1"), 5)
    assert engine.sent == []


async def test_a_cancel_waits_for_the_running_lines_then_lists_the_rest(store) -> None:
    batch, engine, files = make(store, 5), Engine(), Files()
    worker = BatchWorker(store, files, engine, lambda model: 2, "gw-1")
    engine.gate.clear()
    await worker.tick()
    await asyncio.sleep(0)
    assert batches.cancel(store, "acme", batch.id).status is BatchStatus.CANCELLING
    await settle(worker, 3)
    assert batches.find(store, "acme", batch.id).status is BatchStatus.CANCELLING
    engine.gate.set()  # the two running lines end; nothing else is sent
    await settle(worker)
    done = batches.find(store, "acme", batch.id)
    assert done.status is BatchStatus.CANCELLED and engine.sent == [1, 2]
    assert [x["custom_id"] for x in files.lines(done.output_file_id)] == ["req-1", "req-2"]
    assert [(x["custom_id"], x["error"]["code"]) for x in files.lines(done.error_file_id)] == [
        ("req-3", "batch_cancelled"), ("req-4", "batch_cancelled"),
        ("req-5", "batch_cancelled")]


async def test_a_replica_dying_mid_batch_loses_no_line_and_duplicates_none(store, clock):
    batch, files = make(store, 6), Files()
    doomed_engine = Engine()
    doomed_engine.gate.clear()  # its lines never come back: the replica dies with them
    doomed = BatchWorker(store, files, doomed_engine, lambda model: 3, "gw-1",
                         lease=timedelta(seconds=30))
    await doomed.tick()
    await asyncio.sleep(0)
    await doomed.stop()
    assert doomed_engine.sent == [1, 2, 3]

    survivor_engine = Engine()
    survivor = BatchWorker(store, files, survivor_engine, lambda model: 3, "gw-2",
                           lease=timedelta(seconds=30))
    await settle(survivor, 5)
    assert survivor_engine.sent == [4, 5, 6]  # lines 1-3 are still leased to gw-1
    clock.advance(seconds=31)  # gw-1's lease runs out: gw-2 takes its lines
    await settle(survivor)
    done = batches.find(store, "acme", batch.id)
    assert done.status is BatchStatus.COMPLETED
    assert [x["custom_id"] for x in files.lines(done.output_file_id)] == [
        f"req-{i}" for i in range(1, 7)]
    assert done.error_file_id is None


async def test_an_expired_batch_keeps_what_finished(store, clock) -> None:
    batch, engine, files = make(store, 4), Engine(), Files()
    worker = BatchWorker(store, files, engine, lambda model: 1, "gw-1")
    await settle(worker, 1)
    clock.advance(hours=25)
    await settle(worker)
    done = batches.find(store, "acme", batch.id)
    assert done.status is BatchStatus.EXPIRED and done.as_json(0, 0)["expired_at"]
    finished = [x["custom_id"] for x in files.lines(done.output_file_id)]
    expired = [x["custom_id"] for x in files.lines(done.error_file_id)]
    assert sorted(finished + expired) == [f"req-{i}" for i in range(1, 5)]
    assert finished and all(x["error"]["code"] == "batch_expired"
                            for x in files.lines(done.error_file_id))


async def test_two_replicas_finishing_one_batch_leave_one_set_of_files(store) -> None:
    batch, files = make(store, 2), Files()
    first = BatchWorker(store, files, Engine(), lambda model: 2, "gw-1")
    second = BatchWorker(store, files, Engine(), lambda model: 2, "gw-2")
    for line in batches.claim(store, "gw-1", batch, 2, timedelta(seconds=30)):
        batches.record(store, "gw-1", batch.id, line.line, 200, {"id": "c"}, f"r{line.line}")
    batches.advance(store, batch.id, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING)
    finalizing = batches.find(store, "acme", batch.id)
    assert finalizing.status is BatchStatus.FINALIZING
    # Both see it finalizing and write its files; one moves it, the other's files go.
    await asyncio.gather(first._advance(finalizing), second._advance(finalizing))
    done = batches.find(store, "acme", batch.id)
    assert done.status is BatchStatus.COMPLETED and list(files.saved) == [done.output_file_id]


async def test_a_line_its_rate_limit_refuses_waits_and_is_answered_once(store, clock) -> None:
    """Line 2 is refused by its tenant's rate limit once: it goes back unrecorded, the
    tenant's lines pause, and after the wait it is sent again and ends once, in the output."""
    batch, files, sent, limited = make(store, 3), Files(), [], {2}

    async def engine(line) -> LineResult:
        sent.append(line.line)
        if line.line in limited:
            limited.discard(line.line)
            return LineResult.deferred(f"r{line.line}", 2.0)
        return LineResult(200, {"id": f"cmpl-{line.line}"}, f"r{line.line}")

    def one_at_a_time(model: str) -> int:
        return 1 - sum(len(lines) for lines in worker.running.values())

    worker = BatchWorker(store, files, engine, one_at_a_time, "gw-1")
    await settle(worker)
    assert sent == [1, 2]  # line 3 waits with line 2: the tenant's limit holds them both
    assert batches.find(store, "acme", batch.id).status is BatchStatus.IN_PROGRESS
    assert batches.pending_by_tenant(store) == {("acme", "queued"): 2}
    await asyncio.sleep(2.1)  # the tenant's pause (real time) and the line's lease (store's)
    clock.advance(seconds=3)
    await settle(worker)
    done = batches.find(store, "acme", batch.id)
    assert done.status is BatchStatus.COMPLETED and sorted(sent) == [1, 2, 2, 3]
    assert [x["custom_id"] for x in files.lines(done.output_file_id)] == [
        "req-1", "req-2", "req-3"]
    assert done.error_file_id is None


async def test_pending_lines_are_reported_per_tenant_and_zeroed_when_gone(store, monkeypatch):
    gauges: dict[tuple[str, str], float] = {}
    monkeypatch.setattr("serving.batch.worker.metrics.set_gauge",
                        lambda name, tags, value: gauges.__setitem__(
                            (tags["tenant"], tags["state"]), value))
    batch, engine = make(store, 3), Engine()
    worker = BatchWorker(store, Files(), engine, lambda model: 1, "gw-1")
    engine.gate.clear()
    await worker.tick()
    await asyncio.sleep(0)
    await asyncio.to_thread(worker._report_pending)
    assert gauges == {("acme", "queued"): 2, ("acme", "running"): 1}
    engine.gate.set()
    await settle(worker)
    assert batches.find(store, "acme", batch.id).status is BatchStatus.COMPLETED
    await asyncio.to_thread(worker._report_pending)
    assert gauges == {("acme", "queued"): 0, ("acme", "running"): 0}


async def test_a_line_ending_brings_the_next_one_without_waiting_a_tick(store) -> None:
    """One line at a time and ticks 30 s apart: the next line follows each line's end (a
    worker waiting for ticks would take minutes over these five)."""
    batch, engine = make(store, 5), Engine()
    worker = BatchWorker(store, Files(), engine,
                         lambda model: 1 - sum(len(x) for x in worker.running.values()),
                         "gw-1", tick_s=30.0)
    worker.start()
    try:
        for _ in range(1000):
            if batches.counts(store, batch.id)[0].ended == 5:
                break
            await asyncio.sleep(0.02)
    finally:
        await worker.stop()
    assert batches.counts(store, batch.id)[1:] == (5, 0)  # all five answered, 200
    assert engine.sent == [1, 2, 3, 4, 5]


async def test_a_stop_as_a_line_ends_stops_the_worker(store) -> None:
    """A line ending in the same turn of the loop as the replica stops the worker: its stop()
    returns (a CI run hung here when the wait for a line's end swallowed the cancellation)."""
    worker = BatchWorker(store, Files(), Engine(), lambda model: 0, "gw-1", tick_s=30.0)
    worker.start()
    await asyncio.sleep(MIN_TICK_GAP_S + 0.05)  # in its wait for a line's end
    worker._line_ended.set()
    await asyncio.wait_for(worker.stop(), 5)
    assert worker._task.done()
