"""An engine's cold start, phase by phase: where a replica that is not serving yet spends its
time, so that `aifactory up`, `aifactory status` and an operator waiting on a woken endpoint
see "loading weights for 12 s" instead of Serve's DEPLOYING, and cold starts can be
measured (and shortened) phase by phase.

The replica's process and vLLM's engine process append marks to one file (the replica names
it in PHASES_FILE_ENV; the engine process is spawned and inherits it): each mark is the start
of a phase, a phase ends where the next begins. The engine process's marks come from a vLLM
general plugin (`record_engine_phases`) that wraps the two steps of vLLM's EngineCore start,
so they follow vLLM's own boundaries on the CPU and GPU alike.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

PHASES_FILE_ENV = "AIFACTORY_START_PHASES_FILE"


class Phase(StrEnum):
    """In the order a start goes through them."""

    PROCESS = "process"                # Ray starts the replica's process; its imports
    ENGINE_PROCESS = "engine process"  # the engine's configuration; vLLM's engine process
    WEIGHTS = "weights"                # vLLM's workers started, the device set up, the
                                       # weights loaded (on the CPU a worker process of its
                                       # own, whose imports are most of it)
    KV_CACHE = "kv cache"              # memory profiled, the KV cache allocated, warm-up
    SERVING = "serving layer"          # vLLM's OpenAI layer and tokenizer, in the replica
    LINKING = "linking"                # the engine's links opened and published
    READY = "ready"


ORDER = tuple(Phase)
DOING = {
    Phase.PROCESS: "starting its process",
    Phase.ENGINE_PROCESS: "starting the engine",
    Phase.WEIGHTS: "starting workers and loading weights",
    Phase.KV_CACHE: "allocating the KV cache and warming up",
    Phase.SERVING: "starting the serving layer",
    Phase.LINKING: "linking to the gateways",
    Phase.READY: "ready",
}


@dataclass(frozen=True)
class Mark:
    phase: Phase
    at: float


def write_mark(path: str | os.PathLike[str], phase: Phase, at: float | None = None) -> None:
    """Appends one mark; one short write with O_APPEND, so the two processes' lines do not
    interleave."""
    line = json.dumps({"phase": phase.value, "at": time.time() if at is None else at}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_marks(path: str | os.PathLike[str]) -> list[Mark]:
    """The marks written so far, in phase order; a line being written, or not a mark, is
    skipped. A phase marked twice (tensor-parallel workers) counts from its first mark."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    return timeline(_parse(line) for line in text.splitlines())


def _parse(line: str) -> Mark | None:
    try:
        data = json.loads(line)
        return Mark(Phase(data["phase"]), float(data["at"]))
    except (ValueError, KeyError, TypeError):
        return None


def timeline(marks: Iterable[Mark | None]) -> list[Mark]:
    first: dict[Phase, float] = {}
    for mark in marks:
        if mark is not None and mark.phase not in first:
            first[mark.phase] = mark.at
    return [Mark(phase, first[phase]) for phase in ORDER if phase in first]


def durations(marks: Sequence[Mark], now: float) -> list[tuple[Phase, float]]:
    """Each phase's length: to the next mark, the last (unless ready) to `now`."""
    out = []
    for i, mark in enumerate(marks):
        if mark.phase is Phase.READY:
            break
        end = marks[i + 1].at if i + 1 < len(marks) else now
        out.append((mark.phase, max(0.0, end - mark.at)))
    return out


def describe(marks: Sequence[Mark], now: float) -> str:
    """One line: the phase now and for how long, then the phases before it; once ready, the
    whole start."""
    if not marks:
        return "starting"
    spans = durations(marks, now)
    done = ", ".join(f"{phase.value} {seconds:.1f} s" for phase, seconds in spans)
    if marks[-1].phase is Phase.READY:
        return f"ready, started in {marks[-1].at - marks[0].at:.1f} s ({done})"
    phase, seconds = spans[-1]
    before = ", ".join(f"{p.value} {s:.1f} s" for p, s in spans[:-1])
    return f"{DOING[phase]} for {seconds:.0f} s" + (f" (after {before})" if before else "")


# -- in vLLM's engine process ------------------------------------------------------------


def record_engine_phases() -> None:
    """vLLM general plugin: in a process whose replica asked for marks (PHASES_FILE_ENV),
    the engine's start marks WEIGHTS as EngineCore builds its executor (device, workers,
    weights), KV_CACHE as it sizes its KV cache (memory profiling, allocation, warm-up) and
    SERVING once that is done (the replica's process goes on with vLLM's OpenAI layer).
    EngineCore loads the plugins at the top of its own constructor, so its steps after
    that are what can be wrapped."""
    if not os.environ.get(PHASES_FILE_ENV):
        return
    from vllm.v1.engine.core import EngineCore
    from vllm.v1.executor.abstract import Executor

    if getattr(EngineCore, "records_start_phases", False):
        return  # this process wrapped them already
    Executor.__init__ = marking(Executor.__init__, Phase.WEIGHTS)
    EngineCore._initialize_kv_caches = marking(EngineCore._initialize_kv_caches,
                                               Phase.KV_CACHE, Phase.SERVING)
    EngineCore.records_start_phases = True


def marking(method, on_entry: Phase, on_return: Phase | None = None):
    """`method`, marking `on_entry` as it is called and `on_return` as it returns, in the
    file PHASES_FILE_ENV names at the time (none: no mark)."""

    @functools.wraps(method)
    def marked(*args, **kwargs):
        _quietly(on_entry)
        result = method(*args, **kwargs)
        if on_return is not None:
            _quietly(on_return)
        return result

    return marked


def _quietly(phase: Phase) -> None:
    path = os.environ.get(PHASES_FILE_ENV)
    if not path:
        return
    try:
        write_mark(path, phase)
    except OSError:
        pass  # progress is for people watching; the engine starts without it
