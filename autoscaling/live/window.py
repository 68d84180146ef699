"""Turns the reports the controller receives into the policy's `EndpointSignals`.

Engine replicas report their load (serving.engine.stats.EngineSample) and gateway replicas
report arrivals and requests held for an endpoint at zero. `SignalWindow` keeps the reports
of the last `window_s` seconds and summarises them per endpoint. Pure: time is passed in.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass

from autoscaling.signals import EndpointSignals
from serving.engine.stats import EngineSample


@dataclass(frozen=True, slots=True)
class GatewaySample:
    """One gateway replica's view of one endpoint over one reporting interval."""

    arrivals: int  # requests that arrived for the endpoint in the interval
    held: int  # requests waiting right now for the endpoint to get a ready replica


def percentile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (0 < q <= 100); None for no values.
    E.g. percentile([1, 2, 3, 4], 95) == 4 and percentile([1, 2, 3, 4], 50) == 2."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class SignalWindow:
    """Reports of the last `window_s` seconds, per endpoint and reporting replica."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._engines: dict[str, dict[str, deque[tuple[float, EngineSample]]]] = defaultdict(dict)
        self._gateways: dict[str, dict[str, deque[tuple[float, GatewaySample]]]] = defaultdict(dict)
        # The store's batch lines per endpoint at each read: (at, queued, running).
        self._batch: dict[str, deque[tuple[float, int, int]]] = defaultdict(deque)

    def add_engine(self, endpoint: str, replica: str, at: float, sample: EngineSample) -> None:
        self._engines[endpoint].setdefault(replica, deque()).append((at, sample))

    def add_gateway(self, endpoint: str, gateway: str, at: float, sample: GatewaySample) -> None:
        self._gateways[endpoint].setdefault(gateway, deque()).append((at, sample))

    def add_batch(self, endpoint: str, at: float, queued: int, running: int) -> None:
        """The batch lines for `endpoint` in the store at `at`: still to send, and sent."""
        self._batch[endpoint].append((at, queued, running))

    def forget_before(self, cutoff: float) -> None:
        for by_source in (*self._engines.values(), *self._gateways.values(), self._batch):
            for source in list(by_source):
                reports = by_source[source]
                while reports and reports[0][0] < cutoff:
                    reports.popleft()
                if not reports:
                    del by_source[source]

    def batch(self, endpoint: str) -> tuple[int | None, float | None]:
        """(lines queued or running at the last read, lines running: the last read or their
        mean over the window, whichever is more); (None, None) when the store was not read
        within the window.

        The lines running are part of the endpoint's load, some as a mean over the window
        (the engines'), some as last reported (those a gateway holds for an endpoint at
        zero), and must not read as its interactive demand: when a batch ends its lines stay
        in the engines' means for a window, when one starts they are held at once."""
        reads = self._batch.get(endpoint)
        if not reads:
            return None, None
        _, queued, running = reads[-1]
        return queued + running, max(running, sum(r for _, _, r in reads) / len(reads))

    def held(self, endpoint: str) -> int:
        """Requests the gateways hold for `endpoint`, by each gateway's latest report."""
        return sum(reports[-1][1].held for reports in self._gateways[endpoint].values())

    def signals(self, endpoint: str, ready_replicas: int | None, now: float) -> EndpointSignals:
        """Signals of `endpoint` over (now - window_s, now], its batch lines with them."""
        load = self._load(endpoint, ready_replicas, now)
        backlog, running = self.batch(endpoint)
        if backlog is None:
            return load
        return dataclasses.replace(load, batch_backlog=backlog, batch_running=running)

    def _load(self, endpoint: str, ready_replicas: int | None, now: float) -> EndpointSignals:
        """The engines' and gateways' part of the signals.

        running/waiting: each reporting replica's mean over its reports, summed over replicas,
        plus the requests held at the gateways (they wait too, only not in an engine). With
        no ready replica there is no engine to report, so the engines' share is known to be
        zero and every arrival of the window is taken as waiting; with ready replicas that
        have not reported yet it is unknown (None: the policy holds). arrival_rate_rps: arrivals reported by all gateways / the window.
        """
        self.forget_before(now - self.window_s)
        engines = self._engines[endpoint]
        held = self.held(endpoint)
        arrivals = sum(s.arrivals for reports in self._gateways[endpoint].values()
                       for _, s in reports)
        arrival_rate = arrivals / self.window_s if self._gateways[endpoint] else None

        if not engines:
            if ready_replicas == 0:
                # Requests that arrived with no replica running wait somewhere: held at a
                # gateway, or queued in Serve when the gateway did not know yet.
                return EndpointSignals(ready_replicas=0, arrival_rate_rps=arrival_rate,
                                       waiting=float(max(held, arrivals)), running=0.0,
                                       kv_cache_usage=0.0)
            return EndpointSignals(ready_replicas=ready_replicas, arrival_rate_rps=arrival_rate)

        running = waiting = 0.0
        kv_cache_usage = 0.0
        ttft: list[float] = []
        itl: list[float] = []
        for reports in engines.values():
            samples = [s for _, s in reports]
            running += sum(s.running or 0.0 for s in samples) / len(samples)
            waiting += sum(s.waiting or 0.0 for s in samples) / len(samples)
            kv_cache_usage = max(kv_cache_usage,
                                 sum(s.kv_cache_usage or 0.0 for s in samples) / len(samples))
            for s in samples:
                ttft.extend(s.ttft_s)
                itl.extend(s.itl_s)
        return EndpointSignals(
            ready_replicas=ready_replicas,
            arrival_rate_rps=arrival_rate,
            waiting=waiting + held,
            running=running,
            kv_cache_usage=kv_cache_usage,
            ttft_p95_s=percentile(ttft, 95),
            itl_p95_s=percentile(itl, 95),
        )
