"""Which refusals get a ledger row. A refusal costs no tokens, but a row each would let a
flood of refused requests (a client retrying a spent quota in a loop, an overloaded
endpoint's 503s) flood the store. Each tenant's refusals are written up to a burst and then
at a steady rate per gateway replica; all of them are counted by the request metrics
(`aifactory_requests_total{outcome=...}`, `aifactory_rate_limited_total{code=...}`). Pure:
the clock is given."""

from __future__ import annotations

from dataclasses import dataclass, field

# Per tenant and gateway replica: 100 rows at once, then 10 a second. An honest client
# backing off on Retry-After stays far below; its refusals are all in the ledger.
REFUSAL_ROWS_BURST = 100
REFUSAL_ROWS_PER_S = 10.0
_MAX_TENANTS = 100_000


@dataclass
class RefusalRecords:
    burst: int = REFUSAL_ROWS_BURST
    per_s: float = REFUSAL_ROWS_PER_S
    # tenant -> (rows it may still write, when that was last computed)
    _allowance: dict[str, tuple[float, float]] = field(default_factory=dict)

    def keep(self, tenant: str, now: float) -> bool:
        """Whether this refusal of `tenant` at `now` (monotonic seconds) gets its row."""
        left, then = self._allowance.get(tenant, (float(self.burst), now))
        left = min(float(self.burst), left + max(0.0, now - then) * self.per_s)
        if len(self._allowance) >= _MAX_TENANTS and tenant not in self._allowance:
            self._allowance.clear()  # bounded memory; a reset only grants a fresh burst
        if left < 1.0:
            self._allowance[tenant] = (left, now)
            return False
        self._allowance[tenant] = (left - 1.0, now)
        return True
