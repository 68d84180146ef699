"""The simulator against the live platform: one trace, replayed on both, compared.

benchmarks/simulator_vs_live.py drives a live platform of two autoscaled endpoints (the
live two-endpoint test's, tests/e2e_autoscaling/platform.yaml) with a trace of open-loop
Poisson arrivals in phases, and records every request's TTFT and the replicas each endpoint
had, second by second. This module is the pure part: the trace, the simulated world built
from the same partition spec and the same arrivals, the simulator's run of it under the
same policy with the live controller's period and window, and the comparison. Nothing here
does I/O.

The phases (DEFAULT_PHASES; load in replicas of `burst`'s demand at its target concurrency,
which the caller turns into requests per second from a measurement):
  one replica     `burst` at half a replica, `quiet` idle at zero;
  burst           `burst` at 2.5 replicas: it borrows `quiet`'s idle slot;
  quiet returns   `quiet` at half a replica: its requests are held while the slot is taken
                  back from `burst` and a `quiet` replica starts;
  idle            no load: `burst` gives back what it grew, `quiet` idles to zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from autoscaling.simulate.engine import EngineProfile, FluidEngines, StepOutcome
from autoscaling.simulate.run import PartitionController, run
from autoscaling.simulate.scenarios import World
from autoscaling.spec import PartitionSpec

# Within this share of the live figure, the simulator's prediction counts as matching.
TOLERANCE = 0.25


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    load: Mapping[str, float]  # endpoint -> replicas of demand (0 or absent: idle)


DEFAULT_PHASES = (
    Phase("one replica", 40.0, {"burst": 0.5}),
    Phase("burst", 120.0, {"burst": 2.5}),
    Phase("quiet returns", 90.0, {"burst": 2.5, "quiet": 0.5}),
    Phase("idle", 90.0, {}),  # long enough for quiet to be back at zero after a slow start
)


def phase_starts(phases: Sequence[Phase]) -> list[float]:
    return list(np.cumsum([0.0, *(p.seconds for p in phases)])[:-1])


def phase_of(t: float, phases: Sequence[Phase]) -> str:
    for start, phase in zip(phase_starts(phases), phases):
        if start <= t < start + phase.seconds:
            return phase.name
    return phases[-1].name


def arrival_times(phases: Sequence[Phase], requests_per_replica_s: float, seed: int
                  ) -> dict[str, list[float]]:
    """Seconds from the trace's start at which each endpoint gets a request: a Poisson
    process per phase at load x requests_per_replica_s."""
    rng = np.random.default_rng(seed)
    times: dict[str, list[float]] = {}
    for start, phase in zip(phase_starts(phases), phases):
        for endpoint, load in sorted(phase.load.items()):
            rate = load * requests_per_replica_s
            if rate <= 0:
                continue
            count = rng.poisson(rate * phase.seconds)
            times.setdefault(endpoint, []).extend(
                sorted((start + rng.uniform(0.0, phase.seconds, count)).tolist()))
    for endpoint_times in times.values():
        endpoint_times.sort()
    return times


def binned(times: Mapping[str, Sequence[float]], names: Sequence[str], dt: float,
           steps: int) -> np.ndarray:
    """Request counts per [step, endpoint] of the given arrival times."""
    counts = np.zeros((steps, len(names)), dtype=np.int64)
    for column, name in enumerate(names):
        at = np.minimum((np.asarray(times.get(name, ()), dtype=float) / dt).astype(np.int64),
                        steps - 1)
        np.add.at(counts[:, column], at, 1)
    return counts


def live_world(partition: PartitionSpec, profile: EngineProfile,
               times: Mapping[str, Sequence[float]], seconds: float, *,
               initial: Mapping[str, int], prompt_tokens: int, output_tokens: int,
               gateway_slots: Mapping[str, int] | None = None,
               dt: float = 0.1, timeout_s: float = 900.0) -> World:
    """The simulated world of a live run: its partition, its arrivals, its request shape,
    and the gateway's turns per endpoint (EndpointConfig.slots; None: the profile's
    max_num_seqs x max_replicas)."""
    names = [spec.name for spec in partition.endpoints]
    steps = math.ceil(seconds / dt)
    count = len(names)
    starting = np.array([initial.get(name, 0) for name in names], dtype=np.int64)
    world = World(
        scenario="live-check", seed=0, partition=partition, profile=profile, dt=dt,
        prompt_tokens=np.full(count, prompt_tokens), output_tokens=np.full(count, output_tokens),
        normal_replicas=np.zeros(count), initial_replicas=starting,
        baseline_max_replicas=np.array([spec.max_replicas for spec in partition.endpoints]),
        arrivals=binned(times, names, dt, steps), guaranteed=(), noisy=(),
        client_timeout_s=timeout_s,  # the live clients wait far longer than a wake
        gateway_slots=None if gateway_slots is None else np.array(
            [gateway_slots[name] for name in names], dtype=float))
    return world


@dataclass
class Observed:
    """What one run (live or simulated) showed: TTFTs per endpoint and phase, as (seconds,
    weight) pairs (a simulated request can be a fraction of one), per endpoint, sampled
    over time, the replicas asked for (the controller's target) and those ready, and the
    requests the gateway refused for a standing queue."""

    ttft: dict[str, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)
    ready: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    asked: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    refused: dict[str, float] = field(default_factory=dict)  # 503 endpoint_overloaded
    failed: int = 0  # any other failure (live only)

    def add_ttft(self, endpoint: str, phase: str, seconds: float, weight: float = 1.0) -> None:
        self.ttft.setdefault(endpoint, {}).setdefault(phase, []).append((seconds, weight))


class TtftRecorder:
    """A run() step hook that spreads each step's admitted requests over their arrival
    steps (FIFO) and records their TTFT: queueing in whole steps plus the step's service."""

    def __init__(self, names: Sequence[str], phases: Sequence[Phase], observed: Observed,
                 dt: float, sample_every_s: float = 1.0) -> None:
        self.names, self.phases, self.observed, self.dt = list(names), phases, observed, dt
        self.sample_steps = max(1, round(sample_every_s / dt))

    def __call__(self, step: int, engines: FluidEngines, outcome: StepOutcome) -> None:
        if step % self.sample_steps == 0:
            at = step * self.dt
            self.observed.ready.append((at, dict(zip(self.names, engines.ready.tolist()))))
            self.observed.asked.append((at, dict(zip(self.names, engines.held.tolist()))))
        for column in np.flatnonzero(outcome.refused > 0):
            name = self.names[column]
            self.observed.refused[name] = (self.observed.refused.get(name, 0.0)
                                           + float(outcome.refused[column]))
        for column in np.flatnonzero(outcome.admitted > 1e-9):
            after = float(engines.admitted_total[column])
            before = after - float(outcome.admitted[column])
            cumulative = engines.cumulative[:, column]
            at = int(np.searchsorted(cumulative, before, side="right")) - 1
            while at <= step and cumulative[at] < after - 1e-9:
                weight = min(after, cumulative[at + 1]) - max(before, cumulative[at])
                if weight > 1e-9:
                    seconds = (step - at) * self.dt + float(outcome.service_s[column])
                    self.observed.add_ttft(self.names[column],
                                           phase_of(at * self.dt, self.phases), seconds, weight)
                at += 1


def simulate(world: World, phases: Sequence[Phase], *, period_s: float, window_s: float
             ) -> Observed:
    """The partition policy on world with the live controller's period and window."""
    observed = Observed()
    names = [spec.name for spec in world.partition.endpoints]
    recorder = TtftRecorder(names, phases, observed, world.dt)
    controller = PartitionController(world.partition, world.initial_replicas)
    run(world, controller, control_interval_s=period_s, window_s=window_s, on_step=recorder)
    return observed


# -- the comparison ----------------------------------------------------------------------


def weighted_p95(pairs: Sequence[tuple[float, float]]) -> float | None:
    """Nearest-rank 95th percentile of weighted values; None for none."""
    pairs = sorted(p for p in pairs if p[1] > 0)
    total = sum(w for _, w in pairs)
    if total <= 0:
        return None
    running = 0.0
    for value, weight in pairs:
        running += weight
        if running >= 0.95 * total - 1e-9:
            return value
    return pairs[-1][0]


def seconds_until(ready: Sequence[tuple[float, dict[str, int]]], endpoint: str,
                  check: Callable[[int], bool], after: float) -> float | None:
    """Seconds from `after` to the first sample at or after it where the endpoint's ready
    replicas pass `check`; None if none does."""
    for t, replicas in ready:
        if t >= after and check(replicas.get(endpoint, 0)):
            return t - after
    return None


def replica_seconds(ready: Sequence[tuple[float, dict[str, int]]], endpoint: str,
                    until: float) -> float:
    """Ready replicas of endpoint integrated over time (each sample held to the next)."""
    total = 0.0
    for (t, replicas), (t_next, _) in zip(ready, [*ready[1:], (until, {})]):
        total += replicas.get(endpoint, 0) * max(0.0, min(t_next, until) - t)
    return total


@dataclass(frozen=True)
class Row:
    what: str
    live: float | None
    simulated: float | None

    @property
    def ratio(self) -> float | None:
        """simulated / live."""
        if self.live is None or self.simulated is None or self.live == 0:
            return None
        return self.simulated / self.live

    @property
    def within(self) -> bool:
        return self.ratio is not None and abs(self.ratio - 1.0) <= TOLERANCE


def figures(observed: Observed, phases: Sequence[Phase]) -> dict[str, float | None]:
    """The compared figures of one run, by name."""
    starts = dict(zip((p.name for p in phases), phase_starts(phases)))
    end = sum(p.seconds for p in phases)
    out: dict[str, float | None] = {}
    for endpoint, by_phase in sorted(observed.ttft.items()):
        for phase in phases:
            if phase.name in by_phase:
                out[f"{endpoint} TTFT p95, {phase.name} (s)"] = weighted_p95(by_phase[phase.name])
    ready, asked = observed.ready, observed.asked
    # When the controller asked (decisions: signals and policy), and how long the replica
    # then took to be ready (the engine's start), apart: they go wrong for different reasons.
    grow_asked = seconds_until(asked, "burst", lambda n: n >= 2, 0.0)
    grow_ready = seconds_until(ready, "burst", lambda n: n >= 2, 0.0)
    out["burst asked for a 2nd replica, from the start (s)"] = grow_asked
    out["burst 2nd replica start, asked to ready (s)"] = _between(grow_asked, grow_ready)
    wake_asked = seconds_until(asked, "quiet", lambda n: n >= 1, starts["quiet returns"])
    wake_ready = seconds_until(ready, "quiet", lambda n: n >= 1, starts["quiet returns"])
    out["quiet asked for a replica, after 'quiet returns' began (s)"] = wake_asked
    out["quiet replica start, asked to ready (s)"] = _between(wake_asked, wake_ready)
    out["burst back to 1, after 'quiet returns' began (s)"] = seconds_until(
        ready, "burst", lambda n: n <= 1, starts["quiet returns"])
    # Back at zero once woken and idle: from the later of the two.
    idle_from = max(starts["idle"], starts["quiet returns"] + (wake_ready or 0.0))
    out["quiet back at zero, after it was idle and ready (s)"] = seconds_until(
        ready, "quiet", lambda n: n == 0, idle_from)
    for endpoint in ("burst", "quiet"):
        out[f"{endpoint} replica-seconds ready"] = replica_seconds(ready, endpoint, end)
    for endpoint in ("burst", "quiet"):
        out[f"{endpoint} requests refused (503)"] = observed.refused.get(endpoint, 0.0)
    return out


def _between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start

