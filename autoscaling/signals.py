"""What the controller observed of one endpoint: the policy's only window onto the engines."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EndpointSignals:
    """One endpoint's signals over the last sampling window; None means "not observed".

    running and waiting are means over the window (vLLM's num_requests_running and
    num_requests_waiting, summed over replicas); latencies are percentiles over the window
    and are None when no request finished its first token or a decode step in it.
    batch_backlog is the batch lines for this endpoint still to be sent or sent, as the store
    counts them at the decision; batch_running the mean of those sent over the window. Sent
    lines are part of running, waiting and the arrivals too: the engines cannot tell them
    apart.
    """

    ready_replicas: int | None = None
    arrival_rate_rps: float | None = None
    waiting: float | None = None
    running: float | None = None
    kv_cache_usage: float | None = None
    ttft_p95_s: float | None = None
    itl_p95_s: float | None = None
    batch_backlog: int | None = None
    batch_running: float | None = None

    @property
    def ongoing(self) -> float | None:
        """Requests in the engines, queued or decoding; None when either half is unknown."""
        if self.running is None or self.waiting is None:
            return None
        return self.running + self.waiting
