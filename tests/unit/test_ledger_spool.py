"""The ledger writer keeps every record when the store is unreachable: spooled to disk,
replayed once the store answers, never counted twice. A real SQLite store underneath."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from serving.gateway.ledger_writer import LedgerSpool, LedgerWriter
from serving.tenancy import Outcome, Store, UsageRecord
from tests.unit.stores import sqlite_store


def record(n: int) -> UsageRecord:
    at = datetime(2026, 11, 28, 9, 0, n, tzinfo=UTC)
    return UsageRecord(request_id=f"req-{n}", tenant="acme", key_prefix="afk_abcdefgh",
                       endpoint="demo", prompt_tokens=10 + n, completion_tokens=n,
                       ttft_s=0.05 if n % 2 else None, duration_s=0.5,
                       outcome=Outcome.OK if n % 3 else Outcome.CLIENT_CANCELLED,
                       created_at=at, finished_at=at)


@pytest.fixture
def store(tmp_path):
    store = sqlite_store(tmp_path, "acme", "demo")
    yield store
    store.close()


class Flaky:
    """The store's record_usage, unreachable until `up` is set."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.up = False
        self.failures = 0

    def __call__(self, records):
        if not self.up:
            self.failures += 1
            raise ConnectionError("store unreachable")
        return self.store.record_usage(records)


def ledger_ids(store: Store) -> list[str]:
    import csv
    import io

    out = io.StringIO()
    store.export_csv(out, datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    return sorted(row["request_id"] for row in csv.DictReader(io.StringIO(out.getvalue())))


def test_spool_round_trips_records(tmp_path):
    spool = LedgerSpool(tmp_path / "spool")
    records = [record(n) for n in range(5)]
    path = spool.append(records)
    assert spool.batches() == [path]
    assert spool.read(path) == records
    assert not list((tmp_path / "spool").glob("*.partial"))


async def test_records_survive_an_outage_and_land_once(tmp_path, store, monkeypatch):
    from serving.gateway import ledger_writer

    monkeypatch.setattr(ledger_writer, "REPLAY_FIRST_S", 0.01)
    monkeypatch.setattr(ledger_writer, "REPLAY_MAX_S", 0.05)
    flaky = Flaky(store)
    spool = LedgerSpool(tmp_path / "spool")

    writer = LedgerWriter(flaky, spool=spool)
    # Every write returns (durable in the spool) although the store is down.
    await asyncio.gather(*(writer.write(record(n)) for n in range(6)))
    assert flaky.failures >= 1 and spool.batches()
    assert ledger_ids(store) == []
    await asyncio.sleep(0.2)  # replay keeps failing while the store is away
    flaky.up = True
    for _ in range(200):
        if not spool.batches():
            break
        await asyncio.sleep(0.01)
    await writer.write(record(6))  # and the direct path works again
    assert spool.batches() == []
    assert ledger_ids(store) == sorted(f"req-{n}" for n in range(7))


async def test_a_new_writer_replays_what_an_earlier_one_left(tmp_path, store, monkeypatch):
    from serving.gateway import ledger_writer

    monkeypatch.setattr(ledger_writer, "REPLAY_FIRST_S", 0.01)
    spool = LedgerSpool(tmp_path / "spool")
    spool.append([record(1), record(2)])
    spool.append([record(2), record(3)])  # a batch retried before the crash: no double count

    writer = LedgerWriter(store.record_usage, spool=spool)
    writer.start_replay()
    for _ in range(200):
        if not spool.batches():
            break
        await asyncio.sleep(0.01)
    assert ledger_ids(store) == ["req-1", "req-2", "req-3"]


async def test_without_a_spool_the_caller_sees_the_failure(store):
    with pytest.raises(ConnectionError):
        await LedgerWriter(Flaky(store)).write(record(1))


def bad(n: int) -> UsageRecord:
    """A record the store refuses for good (a request id no ledger row may carry)."""
    from dataclasses import replace

    return replace(record(n), request_id="\x00" + "x" * 300)


async def test_a_refused_record_is_dead_lettered_and_the_rest_of_its_batch_lands(tmp_path,
                                                                                   store):
    spool = LedgerSpool(tmp_path / "spool")
    told = []
    writer = LedgerWriter(store.record_usage, spool=spool, on_dead_letter=told.append)
    records = [record(n) for n in range(7)]
    records.insert(3, bad(59))
    # One batch: the writes arrive while no transaction runs, and go in together.
    await asyncio.gather(*(writer.write(r) for r in records))
    assert ledger_ids(store) == sorted(f"req-{n}" for n in range(7))
    assert writer.dead_letters == 1 and [r.request_id for r in told] == [bad(59).request_id]
    (kept,) = spool.dead_letters()
    assert kept["record"]["request_id"] == bad(59).request_id and "request_id" in kept["reason"]
    assert spool.batches() == []  # nothing left to replay: the ledger is not stalled
    await writer.write(record(8))
    assert "req-8" in ledger_ids(store)


async def test_replay_lands_what_it_can_and_dead_letters_the_rest(tmp_path, store, monkeypatch):
    from serving.gateway import ledger_writer

    monkeypatch.setattr(ledger_writer, "REPLAY_FIRST_S", 0.01)
    spool = LedgerSpool(tmp_path / "spool")
    spool.append([record(1), bad(2), record(3)])
    with open(spool.append([record(4)]), "a", encoding="utf-8") as batch:
        batch.write('{"request_id": "torn\n')  # a line cut short by a crash or an editor
    writer = LedgerWriter(store.record_usage, spool=spool)
    writer.start_replay()
    for _ in range(200):
        if not spool.batches():
            break
        await asyncio.sleep(0.01)
    assert spool.batches() == []
    assert ledger_ids(store) == ["req-1", "req-3", "req-4"]
    kept = spool.dead_letters()
    assert len(kept) == 2 and {"record" in k or "line" in k for k in kept} == {True}
    assert writer.dead_letters == 1  # the record; the torn line was no record


def test_spool_keeps_the_adapter_and_reads_old_lines_without_it(tmp_path, store):
    """A record's LoRA adapter survives the spool into the store; a line spooled before the
    ledger kept adapters (no `adapter` key) reads as one on the endpoint's own model."""
    import json
    from dataclasses import asdict, replace

    spool = LedgerSpool(tmp_path / "spool")
    on_adapter = replace(record(1), adapter="acme-ft")
    path = spool.append([on_adapter, record(2)])
    assert '"adapter": "acme-ft"' in path.read_text(encoding="utf-8")
    assert spool.read(path) == [on_adapter, record(2)]
    old = {**asdict(record(3)), "outcome": record(3).outcome.value,
           "created_at": record(3).created_at.isoformat(),
           "finished_at": record(3).finished_at.isoformat()}
    del old["adapter"]
    old_path = tmp_path / "spool" / "00000000T000000000000-old.jsonl"
    old_path.write_text(json.dumps(old) + "\n", encoding="utf-8")
    [read_old] = spool.read(old_path)
    assert read_old == record(3) and read_old.adapter is None
    assert spool.replay(store.record_usage) == 3
    landed = store.usage_records("acme", datetime(2026, 1, 1, tzinfo=UTC),
                                 datetime(2027, 1, 1, tzinfo=UTC))
    assert {r.request_id: r.adapter for r in landed} == {
        "req-1": "acme-ft", "req-2": None, "req-3": None}
