"""The platform's gateway in front of the simulated engines: its refusal of a standing queue,
as the live gateway does it for an engine deployment (serving/targets/bound.py), in two
tests.

- Its line: an endpoint has `turns` (max_ongoing_requests x max_replicas; the held requests
  of a wake take turns too); requests beyond them wait in the gateway's line, first come
  first served, and while the first in line has waited longer than REFUSE_LINE_SHARE of
  its TTFT target, newcomers are refused at once (503 endpoint_overloaded) instead of
  queued.
- The engines' queue: while the endpoint's ready replicas are full (max_num_seqs each, the
  profile's stand-in for max_ongoing_requests) and the next request to be served has waited
  longer than REFUSE_FIRST_TOKEN_SHARE of the target, newcomers are refused too. The live
  test reads the fastest first token of the last second: about the same request.

Batch work is never refused. Not modelled: the hard bound of max_queued_requests beyond the
turns (a line that stands refuses first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from serving.targets.bound import QueueBudget

if TYPE_CHECKING:
    from autoscaling.simulate.engine import FluidEngines

# The shares of a TTFT target the first in a gateway's line, and a first token from full
# engines, may take before newcomers are refused: the live gateway's own.
REFUSE_LINE_SHARE = QueueBudget().line
REFUSE_FIRST_TOKEN_SHARE = QueueBudget().first_token


class Gateway:
    """Per endpoint: its turns and how many steps the first in line, and the next to be
    served on full replicas, may wait; `interactive` False (batch work) never refuses."""

    def __init__(self, turns: np.ndarray, ttft_slo_s: np.ndarray, interactive: np.ndarray,
                 dt: float) -> None:
        self.turns = np.asarray(turns, dtype=float)
        self.line_budget_steps = np.where(interactive, REFUSE_LINE_SHARE * ttft_slo_s / dt,
                                          np.inf)
        self.first_token_budget_steps = np.where(
            interactive, REFUSE_FIRST_TOKEN_SHARE * ttft_slo_s / dt, np.inf)

    def refusing(self, engines: FluidEngines, step: int) -> np.ndarray:
        """Per endpoint: whether newcomers are refused at `step`, from the engines' queue
        as the last step left it (its head moved to the oldest request still waiting).

        The line: e.g. 512 turns, 300 running and 400 waiting: 188 in line, its first is
        request 212 of the queue; arrived 0.6 s ago against a 2 s target (0.5 s), it stands.
        The engines: 2 ready replicas of 256 full, the next to be served waited 1.2 s
        against a 2 s target (1 s): it stands."""
        running, waiting = engines.running, engines.waiting
        in_flight = running + waiting
        full = (engines.ready > 0) & (waiting >= 1.0) & (
            in_flight >= engines.ready * engines.profile.max_num_seqs - 1e-9)
        stands = full & (step - engines.head_step > self.first_token_budget_steps)
        line = in_flight - self.turns
        for endpoint in np.flatnonzero((line >= 1.0) & ~stands):
            first = engines.admitted_total[endpoint] + max(
                0.0, self.turns[endpoint] - running[endpoint])
            column = engines.cumulative[: step + 1, endpoint]
            arrived = int(np.searchsorted(column, first, side="right")) - 1
            stands[endpoint] = step - arrived > self.line_budget_steps[endpoint]
        return stands
