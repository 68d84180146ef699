"""An engine replica's start, phase by phase: the marks two processes append, the timeline and
durations read from them, the one-line description `aifactory up`/`status` print, and the
entry published for them. The real engine's marks are checked end to end
(tests/e2e/test_engine_starts.py)."""

from __future__ import annotations

import json
import os

import pytest

from serving.engine import start_phases
from serving.engine.start_phases import (
    PHASES_FILE_ENV,
    Mark,
    Phase,
    describe,
    durations,
    marking,
    read_marks,
    write_mark,
)
from serving.engine.start_progress import StartEntry


def test_marks_are_read_in_phase_order_and_the_first_of_a_phase_counts(tmp_path):
    path = tmp_path / "marks.jsonl"
    write_mark(path, Phase.PROCESS, 100.0)
    write_mark(path, Phase.WEIGHTS, 104.0)  # the engine process's, before the replica's next
    write_mark(path, Phase.ENGINE_PROCESS, 102.0)
    write_mark(path, Phase.WEIGHTS, 105.0)  # a second tensor-parallel worker's
    assert read_marks(path) == [Mark(Phase.PROCESS, 100.0), Mark(Phase.ENGINE_PROCESS, 102.0),
                                Mark(Phase.WEIGHTS, 104.0)]


def test_a_torn_or_foreign_line_is_skipped(tmp_path):
    path = tmp_path / "marks.jsonl"
    write_mark(path, Phase.PROCESS, 1.0)
    with path.open("a") as f:
        f.write('{"phase": "weights", "at": \n')            # being written
        f.write('{"phase": "nonsense", "at": 3}\n')          # not a phase
        f.write('{"phase": "kv cache", "at": "soon"}\n')     # not a time
        f.write("[1, 2]\n\x00\xff\n")
    write_mark(path, Phase.KV_CACHE, 4.0)
    assert read_marks(path) == [Mark(Phase.PROCESS, 1.0), Mark(Phase.KV_CACHE, 4.0)]
    assert read_marks(tmp_path / "missing.jsonl") == []


def test_durations_run_to_the_next_mark_and_the_last_to_now():
    marks = [Mark(Phase.PROCESS, 10.0), Mark(Phase.ENGINE_PROCESS, 13.0),
             Mark(Phase.WEIGHTS, 20.0)]
    assert durations(marks, now=32.0) == [(Phase.PROCESS, 3.0), (Phase.ENGINE_PROCESS, 7.0),
                                          (Phase.WEIGHTS, 12.0)]
    ready = [*marks, Mark(Phase.READY, 25.0)]
    assert durations(ready, now=1000.0)[-1] == (Phase.WEIGHTS, 5.0)


def test_the_description_names_what_it_does_now_then_what_it_did():
    marks = [Mark(Phase.PROCESS, 10.0), Mark(Phase.ENGINE_PROCESS, 13.0),
             Mark(Phase.WEIGHTS, 20.0)]
    assert describe(marks, now=32.0) == (
        "starting workers and loading weights for 12 s "
        "(after process 3.0 s, engine process 7.0 s)")
    assert describe(marks[:1], now=11.0) == "starting its process for 1 s"
    assert describe([*marks, Mark(Phase.READY, 30.0)], now=99.0) == (
        "ready, started in 20.0 s (process 3.0 s, engine process 7.0 s, weights 10.0 s)")
    assert describe([], now=0.0) == "starting"


def test_marking_writes_where_the_environment_says_at_the_time(tmp_path, monkeypatch):
    calls = []
    wrapped = marking(lambda x: calls.append(x) or x * 2, Phase.KV_CACHE, Phase.SERVING)
    monkeypatch.delenv(PHASES_FILE_ENV, raising=False)
    assert wrapped(1) == 2  # no file asked for: no mark, same result
    path = tmp_path / "marks.jsonl"
    monkeypatch.setenv(PHASES_FILE_ENV, str(path))
    assert wrapped(2) == 4
    assert [m.phase for m in read_marks(path)] == [Phase.KV_CACHE, Phase.SERVING]
    assert calls == [1, 2]


def test_a_failing_method_marks_its_entry_only(tmp_path, monkeypatch):
    def fails():
        raise RuntimeError("out of memory")

    path = tmp_path / "marks.jsonl"
    monkeypatch.setenv(PHASES_FILE_ENV, str(path))
    with pytest.raises(RuntimeError, match="out of memory"):
        marking(fails, Phase.KV_CACHE, Phase.SERVING)()
    assert [m.phase for m in read_marks(path)] == [Phase.KV_CACHE]


def test_an_unwritable_file_does_not_stop_the_engine(tmp_path, monkeypatch):
    monkeypatch.setenv(PHASES_FILE_ENV, str(tmp_path / "no-such-dir" / "marks.jsonl"))
    assert marking(lambda: "started", Phase.WEIGHTS)() == "started"


def test_the_plugin_does_nothing_unless_a_replica_asked(monkeypatch):
    monkeypatch.delenv(PHASES_FILE_ENV, raising=False)
    start_phases.record_engine_phases()  # must not import vLLM's engine nor wrap anything
    from vllm.v1.engine.core import EngineCore

    assert not getattr(EngineCore, "records_start_phases", False)


def test_published_entries_round_trip_and_hostile_ones_are_refused():
    entry = StartEntry("aifactory", "engine-chat", "r1", "chat",
                       (Mark(Phase.PROCESS, 1.0), Mark(Phase.READY, 9.0)), 9.5)
    back = StartEntry.from_entry(entry.key, entry.to_json())
    assert back == entry and back.ready
    assert back.view(now=20.0) == {"endpoint": "chat", "app": "aifactory",
                                   "deployment": "engine-chat",
                                   "replica": "r1", "ready": True, "phase": "ready",
                                   "phases": {"process": 8.0}}
    for key, value in ((b"no-slashes", entry.to_json()),
                       (entry.key, b"{not json"),
                       (entry.key, json.dumps({"endpoint": "x", "at": 1}).encode()),
                       (entry.key, json.dumps({"endpoint": "x", "at": 1,
                                               "marks": [["teleport", 1]]}).encode()),
                       (b"\xff/a/b", entry.to_json())):
        assert StartEntry.from_entry(key, value) is None


def test_a_replica_sets_the_file_for_its_engine_process(monkeypatch):
    from serving.engine.start_progress import StartProgress

    monkeypatch.setenv(PHASES_FILE_ENV, "")  # restored (unset) when the test ends
    progress = StartProgress("aifactory", "engine-chat", "r1", "chat")
    try:
        assert os.environ[PHASES_FILE_ENV] == progress.path
        progress.mark(Phase.ENGINE_PROCESS)
        entry = progress.entry()
        assert [m.phase for m in entry.marks] == [Phase.PROCESS, Phase.ENGINE_PROCESS]
        assert entry.marks[0].at <= entry.marks[1].at  # the process began before
    finally:
        os.unlink(progress.path)


class RecordingGcs:
    """Ray's GCS client as far as StartProgress uses it: the entries it was given."""

    def __init__(self) -> None:
        self.puts: list[StartEntry] = []
        self.deleted: list[bytes] = []

    def internal_kv_put(self, key, value, overwrite, namespace, timeout=None):
        assert namespace == b"aifactory-start" and overwrite
        self.puts.append(StartEntry.from_entry(key, value))

    def internal_kv_del(self, key, del_by_prefix, namespace, timeout=None):
        self.deleted.append(key)


async def test_progress_is_published_while_the_engine_blocks_the_event_loop(monkeypatch):
    """vLLM's engine constructor holds the replica's event loop until the engine is up:
    the progress of those minutes must still reach the GCS (seen: `aifactory up` showed
    Serve's UPDATING until the serving layer, while a task on the loop waited)."""
    import time as clock

    from serving.engine.start_progress import StartProgress

    monkeypatch.setattr("serving.engine.start_progress.PUBLISH_PERIOD_S", 0.1)
    monkeypatch.setenv(PHASES_FILE_ENV, "")
    gcs = RecordingGcs()
    progress = StartProgress("aifactory", "engine-chat", "r1", "chat", gcs=gcs)
    progress.mark(Phase.ENGINE_PROCESS)
    progress.start()
    clock.sleep(0.5)  # noqa: ASYNC251 - the loop blocked, as by AsyncLLM's constructor
    write_mark(progress.path, Phase.WEIGHTS)  # the engine process's mark
    clock.sleep(0.5)  # noqa: ASYNC251
    seen = [e.marks[-1].phase for e in gcs.puts]
    assert Phase.ENGINE_PROCESS in seen and Phase.WEIGHTS in seen, seen
    spans = await progress.ready()
    assert [p for p, _ in spans] == [Phase.PROCESS, Phase.ENGINE_PROCESS, Phase.WEIGHTS]
    assert gcs.puts[-1].ready and not os.path.exists(progress.path)
    await progress.withdraw()
    assert gcs.deleted == [gcs.puts[-1].key]
