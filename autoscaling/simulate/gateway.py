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
- The tokens: while the ready replicas run at least LOADED_SHARE of their slots and the
  last step's inter-token latency exceeds REFUSE_TOKEN_GAP_SHARE of the ITL target,
  newcomers are refused too (the live gateway reads the mean gap between its streams'
  tokens over the last second). Without it an endpoint at twice its replicas' load admits
  until its batch and the newcomers' prefills stretch every step past the ITL target, and
  serves nothing within SLO: on contested seed 0 the busiest guaranteed tenant, 5 replicas
  for a burst of 12, served none of its burst.

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
REFUSE_TOKEN_GAP_SHARE = QueueBudget().token_gap
LOADED_SHARE = QueueBudget().loaded


class Gateway:
    """Per endpoint: its turns, how many steps the first in line, and the next to be served
    on full replicas, may wait, and how slow its tokens may come; `interactive` False
    (batch work) never refuses."""

    def __init__(self, turns: np.ndarray, ttft_slo_s: np.ndarray, itl_slo_s: np.ndarray,
                 interactive: np.ndarray, dt: float) -> None:
        self.turns = np.asarray(turns, dtype=float)
        self.itl_budget_s = np.where(interactive, REFUSE_TOKEN_GAP_SHARE * itl_slo_s, np.inf)
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
        against a 2 s target (1 s): it stands. The tokens: 2 ready replicas of 256 running
        300 at 45 ms a token against a 50 ms target (40 ms): refused."""
        running, waiting = engines.running, engines.waiting
        in_flight = running + waiting
        slots = engines.ready * engines.profile.max_num_seqs
        full = (engines.ready > 0) & (waiting >= 1.0) & (in_flight >= slots - 1e-9)
        stands = full & (step - engines.head_step > self.first_token_budget_steps)
        stands |= ((engines.ready > 0) & (in_flight >= LOADED_SHARE * slots)
                   & (engines.itl > self.itl_budget_s))
        line = in_flight - self.turns
        for endpoint in np.flatnonzero((line >= 1.0) & ~stands):
            first = engines.admitted_total[endpoint] + max(
                0.0, self.turns[endpoint] - running[endpoint])
            column = engines.cumulative[: step + 1, endpoint]
            arrived = int(np.searchsorted(column, first, side="right")) - 1
            stands[endpoint] = step - arrived > self.line_budget_steps[endpoint]
        return stands
