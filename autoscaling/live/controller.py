"""The live partition controller: one long-lived Ray Serve replica (a Ray actor) that samples
the engines' and gateways' reports, runs the pure policy on a fixed period, applies its
targets to the engine deployments, and persists state and decisions so a restarted
controller resumes where it stopped.

Engine replicas push an EngineSample about once a second (`report_engine`); gateway
replicas push their arrivals and held requests (`report_gateway`) and ask for an endpoint at
zero to be woken (`wake`), which runs a decision at once instead of at the next period. The
batch lines for each endpoint are read from the store at each decision, through a callable
the app builder hands in: the policy lends them what interactive demand leaves. So is the
partition itself (`partition_source`): the endpoints of the config and those created
through the admin API, which come, go and change their autoscaling block at run time; an
endpoint seen for the first time starts from the replicas it was deployed with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from autoscaling.decision import PolicyResult
from autoscaling.live.partition_view import PartitionSource, PartitionView
from autoscaling.live.persistence import Snapshot, SnapshotStore, upgrade
from autoscaling.live.serve_control import ServeControl
from autoscaling.live.window import GatewaySample, SignalWindow
from autoscaling.policy import decide
from autoscaling.spec import PartitionSpec
from autoscaling.state import EndpointState, PolicyState
from observability import metrics
from serving.engine.stats import EngineSample
from serving.event_wait import wait_event

# Serve writes the "ray.serve" logger to the replica's log file (logs/serve/replica_*.log).
logger = logging.getLogger("ray.serve")

# A burst of wakes runs at most one decision per this many seconds.
MIN_DECISION_GAP_S = 0.5

# Batch lines per endpoint (its model name), as (queued, running): what the store holds.
BatchBacklog = Callable[[], Mapping[str, tuple[int, int]]]


class PartitionController:
    """Ray Serve replica class (wrapped with `serve.deployment` by the app builder; one
    replica). `partition` (a PartitionSpec's JSON; None when the config autoscales no
    endpoint) and `deployments` (each of its endpoints' engine deployment in `app_name`) are
    the config's; `partition_source` reads the whole partition, created endpoints with
    them, before each decision."""

    async def __init__(self, partition: dict[str, Any] | None, app_name: str,
                       deployments: dict[str, str], initial_targets: dict[str, int],
                       database_url: str, period_s: float = 5.0, window_s: float = 15.0,
                       accelerator: str = "cpu", batch_backlog: BatchBacklog | None = None,
                       partition_source: PartitionSource | None = None) -> None:
        """`initial_targets`: the replicas the application was deployed with, where a first
        start begins (replicas still loading count: they are not yet running).
        `batch_backlog` reads the batch lines per endpoint from the store (blocking; run in a
        thread); None: nothing is lent to batch work. `partition_source` likewise reads the
        partition; None: the config's is the partition for good."""
        spec = None if partition is None else PartitionSpec.model_validate(partition)
        self.view = PartitionView(spec, {e: (app_name, d) for e, d in deployments.items()},
                                  dict(initial_targets))
        self.partition = spec
        self.partition_source = partition_source
        self.batch_backlog = batch_backlog
        self.period_s = period_s
        self.accelerator = accelerator
        self.window = SignalWindow(window_s)
        self.serve = ServeControl(self.view.deployments)
        await asyncio.to_thread(upgrade, database_url)  # no-op once `aifactory up` did it
        self.snapshots = SnapshotStore(database_url)
        self.running: dict[str, int] = {}
        self.last: Snapshot | None = await asyncio.to_thread(self.snapshots.load,
                                                             self.view.name)
        self.resumed = self.last is not None
        if self.resumed:
            self.state = PolicyState.from_dict(self.last.state)
            self.applied: dict[str, int] = {}  # the target last sent to Serve, per endpoint
        else:
            self.state = PolicyState(endpoints={
                name: EndpointState(target=n) for name, n in initial_targets.items()})
            self.applied = dict(initial_targets)
        self.started_at = time.time()
        self._wake = asyncio.Event()
        self._last_decision = 0.0
        self._loop = asyncio.get_running_loop().create_task(self._run())

    # -- reports -----------------------------------------------------------------------

    def report_engine(self, endpoint: str, replica: str, sample: dict[str, Any]) -> None:
        self.window.add_engine(endpoint, replica, time.time(), EngineSample.from_dict(sample))

    def report_gateway(self, gateway: str, per_endpoint: dict[str, tuple[int, int]]
                       ) -> dict[str, int]:
        """`per_endpoint`: endpoint -> (arrivals since the last report, held now). Returns
        the running replicas per endpoint, for the gateway's hold decisions."""
        now = time.time()
        for endpoint, (arrivals, held) in per_endpoint.items():
            self.window.add_gateway(endpoint, gateway, now, GatewaySample(arrivals, held))
            if held and not self.running.get(endpoint):
                self._wake.set()
        return dict(self.running)

    def wake(self, gateway: str, endpoint: str, held: int) -> int:
        """A gateway holds `held` requests for `endpoint`: decide now. Returns its running
        replicas as last seen."""
        self.window.add_gateway(endpoint, gateway, time.time(), GatewaySample(0, held))
        self._wake.set()
        return self.running.get(endpoint, 0)

    # -- the loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await wait_event(self._wake, self.period_s)
            self._wake.clear()
            gap = self._last_decision + MIN_DECISION_GAP_S - time.monotonic()
            if gap > 0:
                await asyncio.sleep(gap)
            self._last_decision = time.monotonic()
            try:
                await self.step()
            except Exception:  # a failed step must not end the loop; the next one retries
                logger.exception("autoscaler step failed")

    async def step(self) -> PolicyResult | None:
        """One decision over the partition as the store has it now; None when no endpoint
        is autoscaled."""
        await self._read_partition()
        running = await self.serve.running_replicas()
        self.running = running
        if self.partition is None:
            await self._forget_decisions()
            return None
        backlog = await self._read_batch_backlog()
        now = time.time()
        if backlog is not None:  # not read: the window's reads age out, then it is unknown
            for spec in self.partition.endpoints:
                self.window.add_batch(spec.name, now, *backlog.get(spec.name, (0, 0)))
        signals = {spec.name: self.window.signals(spec.name, running.get(spec.name), now)
                   for spec in self.partition.endpoints}
        result = decide(self.partition, signals, self.state, now)
        for name, decision in result.decisions.items():
            if self.applied.get(name) != decision.target:
                try:
                    await self.serve.scale(name, decision.target)
                except Exception as exc:  # noqa: BLE001 - e.g. a created endpoint whose
                    # deployment Serve has not yet: the next decision sends it again
                    logger.warning("autoscaler: %s not scaled to %d: %r", name,
                                   decision.target, exc)
                    continue
                self.applied[name] = decision.target
        actions = [
            {"at": now, "endpoint": d.endpoint, "previous": d.previous, "target": d.target,
             "current": d.current, "reason": d.reason.value, "explanation": d.explanation}
            for d in result.decisions.values() if d.changed]
        for action in actions:
            logger.info("autoscaler: %(endpoint)s %(previous)s -> %(target)s (%(reason)s): "
                        "%(explanation)s", action)
        snapshot = Snapshot(self.partition.name, now, result.state.to_dict(),
                            [self._decision_view(d.to_dict(), signals[name])
                             for name, d in result.decisions.items()],
                            self.started_at, self.resumed)
        await asyncio.to_thread(self.snapshots.save, snapshot, actions)
        self.state, self.last = result.state, snapshot
        self._record_metrics(result)
        return result

    async def _read_partition(self) -> None:
        if self.partition_source is None:
            return
        try:
            view = await asyncio.to_thread(self.partition_source)
        except Exception as exc:  # noqa: BLE001 - the store away: decide over the last view
            logger.warning("autoscaler: partition not read, deciding over the last: %r", exc)
            return
        self.adopt(view)

    def adopt(self, view: PartitionView) -> None:
        """Decide over `view` from now on. An endpoint new to the policy starts from the
        replicas it was deployed with (also the target Serve has for it); one that left
        is forgotten, so a new endpoint of the same name starts afresh."""
        names = {spec.name for spec in view.endpoints}
        known = self.state.endpoints
        seeded = {name: EndpointState(target=view.initial[name]) for name in names
                  if name not in known and name in view.initial}
        if seeded:
            self.state = replace(self.state, endpoints={**known, **seeded})
            self.applied.update({name: view.deployed.get(name, s.target)
                                 for name, s in seeded.items()})
        for name in set(self.applied) - names:
            del self.applied[name]
        self.view, self.partition = view, view.spec
        self.serve.deployments = dict(view.deployments)

    async def _forget_decisions(self) -> None:
        """No endpoint is autoscaled now: the last one's decision is no longer shown."""
        if self.last is None or not self.last.decisions:
            return
        self.state = PolicyState()
        self.applied.clear()
        snapshot = Snapshot(self.view.name, time.time(), self.state.to_dict(), [],
                            self.started_at, self.resumed)
        await asyncio.to_thread(self.snapshots.save, snapshot, [])
        self.last = snapshot

    async def _read_batch_backlog(self) -> Mapping[str, tuple[int, int]] | None:
        if self.batch_backlog is None:
            return None
        try:
            return await asyncio.to_thread(self.batch_backlog)
        except Exception as exc:  # noqa: BLE001 - the store away: decide, hold what is lent
            logger.warning("autoscaler: batch backlog not read: %r", exc)
            return None

    def _decision_view(self, decision: dict[str, Any], signals) -> dict[str, Any]:
        spec = self.partition.endpoint(decision["endpoint"])
        return {**decision, "guaranteed": spec.guaranteed_replicas,
                "replica_cost": spec.replica_cost, "priority": spec.priority,
                "signals": {"running": signals.running, "waiting": signals.waiting,
                            "arrival_rate_rps": signals.arrival_rate_rps,
                            "kv_cache_usage": signals.kv_cache_usage,
                            "ttft_p95_s": signals.ttft_p95_s, "itl_p95_s": signals.itl_p95_s,
                            "batch_backlog": signals.batch_backlog,
                            "batch_running": signals.batch_running}}

    def _record_metrics(self, result: PolicyResult) -> None:
        metrics.set_gauge("aifactory_partition_capacity_accelerators",
                          {"accelerator": self.accelerator}, self.partition.capacity)
        for name, d in result.decisions.items():
            spec = self.partition.endpoint(name)
            tags = {"endpoint": name}
            metrics.set_gauge("aifactory_endpoint_replicas_target", tags, d.target)
            if d.current is not None:
                metrics.set_gauge("aifactory_endpoint_replicas_actual", tags, d.current)
            metrics.set_gauge("aifactory_endpoint_guaranteed_replicas", tags,
                              spec.guaranteed_replicas)
            metrics.set_gauge("aifactory_endpoint_allocated_accelerators", tags,
                              d.target * spec.replica_cost)
            metrics.inc("aifactory_autoscaler_decisions", {**tags, "reason": d.reason.value})

    async def check_health(self) -> None:
        if self._loop.done():
            raise RuntimeError(f"the autoscaler loop ended: {self._loop.exception()!r}")

