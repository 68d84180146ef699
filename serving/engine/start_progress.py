"""A starting engine replica's progress (start_phases' timeline), published in Ray's GCS
key-value store, where the engines' link addresses are (serving.targets.links.directory):
on every Ray cluster, readable by `aifactory up` and `aifactory status` from any node.

While a replica starts, its entry is refreshed every PUBLISH_PERIOD_S; once ready it holds
the whole start and is refreshed every READY_REFRESH_S until the replica stops (an operator
sees what the last start cost). An entry not refreshed for STALE_S belongs to a replica that
died: readers skip it, and remove it once FORGET_S old.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from serving.engine.start_phases import (
    PHASES_FILE_ENV,
    Mark,
    Phase,
    durations,
    read_marks,
    timeline,
    write_mark,
)
from serving.targets.links.directory import gcs_client

logger = logging.getLogger(__name__)

NAMESPACE = b"aifactory-start"
PUBLISH_PERIOD_S = 1.0
READY_REFRESH_S = 10.0
STALE_S = 30.0
FORGET_S = 86400.0
KV_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class StartEntry:
    app: str
    deployment: str
    replica: str
    endpoint: str
    marks: tuple[Mark, ...]
    published_at: float

    @property
    def key(self) -> bytes:
        return f"{self.app}/{self.deployment}/{self.replica}".encode()

    @property
    def ready(self) -> bool:
        return bool(self.marks) and self.marks[-1].phase is Phase.READY

    def to_json(self) -> bytes:
        return json.dumps({"endpoint": self.endpoint, "at": self.published_at,
                           "marks": [[m.phase.value, m.at] for m in self.marks]}).encode()

    @classmethod
    def from_entry(cls, key: bytes, value: bytes) -> StartEntry | None:
        try:
            app, deployment, replica = key.decode().split("/", 2)
            data = json.loads(value)
            marks = timeline(Mark(Phase(p), float(at)) for p, at in data["marks"])
            return cls(app, deployment, replica, str(data["endpoint"]), tuple(marks),
                       float(data["at"]))
        except (ValueError, KeyError, TypeError):
            return None

    def view(self, now: float) -> dict:
        return {"endpoint": self.endpoint, "app": self.app, "deployment": self.deployment,
                "replica": self.replica, "ready": self.ready,
                "phase": self.marks[-1].phase.value if self.marks else None,
                "phases": {p.value: round(s, 3) for p, s in durations(self.marks, now)}}


def process_started_at() -> float:
    """When this process began (Ray's worker start and the imports before the replica's
    constructor are part of a cold start)."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - progress only; the constructor's entry is near
        return time.time()


class StartProgress:
    """One starting replica's timeline: its own marks and its engine process's (the file in
    PHASES_FILE_ENV, which the engine process inherits), published from a thread of its
    own: vLLM's engine constructor blocks the replica's event loop until the engine is up,
    which is the very time the progress is for."""

    def __init__(self, app: str, deployment: str, replica: str, endpoint: str,
                 clock: Callable[[], float] = time.time, gcs=None) -> None:
        """`gcs`: Ray's GCS client (default: this process's)."""
        self._clock = clock
        self._gcs = gcs
        self._names = (app, deployment, replica, endpoint)
        fd, self.path = tempfile.mkstemp(prefix="aifactory-start-", suffix=".jsonl")
        os.close(fd)
        os.environ[PHASES_FILE_ENV] = self.path
        write_mark(self.path, Phase.PROCESS, process_started_at())
        self.marks: list[Mark] = []
        self._period_s = PUBLISH_PERIOD_S
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def mark(self, phase: Phase) -> None:
        write_mark(self.path, phase, self._clock())

    def entry(self) -> StartEntry:
        if not self.marks or self.marks[-1].phase is not Phase.READY:
            self.marks = read_marks(self.path)
        return StartEntry(*self._names, tuple(self.marks), self._clock())

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._publish_forever, daemon=True,
                                            name="start-progress")
            self._thread.start()

    def _publish_forever(self) -> None:
        while True:
            self._publish()
            if self._stopping.wait(self._period_s):
                return

    def _publish(self) -> None:
        entry = self.entry()
        try:
            (self._gcs or gcs_client()).internal_kv_put(entry.key, entry.to_json(), True,
                                                        NAMESPACE, timeout=KV_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the GCS restarts; the start goes on
            logger.warning("could not publish this replica's start: %r", exc)

    async def ready(self) -> list[tuple[Phase, float]]:
        """Marks READY; the whole start is published at once and from then on every
        READY_REFRESH_S. Returns each phase's length."""
        self.mark(Phase.READY)
        self.entry()  # the marks, read once more before the file goes
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.environ.pop(PHASES_FILE_ENV, None)
        await asyncio.to_thread(self._publish)
        self._period_s = READY_REFRESH_S  # the thread's next wait
        return durations(self.marks, self._clock())

    async def withdraw(self) -> None:
        self._stopping.set()
        key = StartEntry(*self._names, (), 0.0).key
        try:
            await asyncio.to_thread((self._gcs or gcs_client()).internal_kv_del, key, False,
                                    NAMESPACE, timeout=KV_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001
            logger.warning("could not withdraw this replica's start: %r", exc)


def read_starts(now: float | None = None) -> list[StartEntry]:
    """Every live replica's start as published (blocking; a Ray driver's call): starting or
    ready, refreshed within STALE_S. Entries of replicas long gone are removed."""
    gcs = gcs_client()
    now = time.time() if now is None else now
    keys = gcs.internal_kv_keys(b"", NAMESPACE, timeout=KV_TIMEOUT_S)
    entries = gcs.internal_kv_multi_get(keys, NAMESPACE, timeout=KV_TIMEOUT_S) if keys else {}
    kept = []
    for key, value in entries.items():
        entry = StartEntry.from_entry(key, value)
        if entry is None or now - entry.published_at > FORGET_S:
            gcs.internal_kv_del(key, False, NAMESPACE, timeout=KV_TIMEOUT_S)
        elif now - entry.published_at <= STALE_S:
            kept.append(entry)
    return sorted(kept, key=lambda e: (e.app, e.deployment, e.replica))


def record_start(endpoint: str, spans: list[tuple[Phase, float]]) -> None:
    """A finished start in the replica's log and in metrics, phase by phase."""
    from observability import metrics

    for phase, seconds in spans:
        metrics.observe("aifactory_engine_start_phase_seconds",
                        {"endpoint": endpoint, "phase": phase.value}, seconds)
    logger.info("engine %s started in %.1f s: %s", endpoint, sum(s for _, s in spans),
                ", ".join(f"{p.value} {s:.1f} s" for p, s in spans))
