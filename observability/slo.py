"""SLO targets, the one definition serving, autoscaling and the SLA report share: the targets
in force (`SloTargets`, seconds) and a tenant's targets as set (`SloSettings`, milliseconds,
None for the platform default), with the bounds every way of setting them obeys."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import PydanticCustomError

# Targets in milliseconds: from 1 ms to 10 minutes (TTFT) and 1 minute (ITL).
TTFT_P95_MS_RANGE = (1, 600_000)
ITL_P95_MS_RANGE = (1, 60_000)
# An objective of 1 leaves no error budget, so burn rates would divide by zero.
OBJECTIVE_RANGE = (0.5, 0.99999)

TtftP95Ms = Annotated[int, Field(ge=TTFT_P95_MS_RANGE[0], le=TTFT_P95_MS_RANGE[1],
                                 description="time to first token, p95, milliseconds")]
ItlP95Ms = Annotated[int, Field(ge=ITL_P95_MS_RANGE[0], le=ITL_P95_MS_RANGE[1],
                                description="inter-token latency, p95, milliseconds")]
Objective = Annotated[float, Field(ge=OBJECTIVE_RANGE[0], le=OBJECTIVE_RANGE[1],
                                   allow_inf_nan=False,
                                   description="share of requests that must meet both targets")]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class SloTargets(BaseModel):
    """The latency promised: p95 time to first token and p95 inter-token latency in seconds,
    and the share of requests (`objective`) that must meet both. A tenant's targets judge its
    requests; an endpoint's tell the autoscaler when to add a replica."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttft_p95_s: Seconds = Field(description="time to first token, p95, seconds")
    itl_p95_s: Seconds = Field(description="inter-token latency, p95, seconds")
    objective: Objective = 0.99


DEFAULT_SLO = SloTargets(ttft_p95_s=2.0, itl_p95_s=0.2, objective=0.99)

# What each setting must be, for the message that refuses one.
_WHAT = {
    "ttft_p95_ms": "whole milliseconds in [{}, {}]".format(*TTFT_P95_MS_RANGE),
    "itl_p95_ms": "whole milliseconds in [{}, {}]".format(*ITL_P95_MS_RANGE),
    "objective": "a ratio in [{}, {}] (e.g. 0.99)".format(*OBJECTIVE_RANGE),
}


class SloSettings(BaseModel):
    """A tenant's SLO targets as set, in milliseconds; None means the platform default
    (`DEFAULT_SLO`). The store keeps this, the admin API shows it, a config file's tenant
    `slo` is it. Strict: True is not 1 ms, nor 1.5 a whole millisecond."""

    # Output carries every field (null for a default), so the JSON schema requires them.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True,
                              json_schema_serialization_defaults_required=True)

    ttft_p95_ms: TtftP95Ms | None = None
    itl_p95_ms: ItlP95Ms | None = None
    objective: Objective | None = None

    @field_validator("ttft_p95_ms", "itl_p95_ms", "objective", mode="wrap")
    @classmethod
    def _say_what_fits(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                       info: ValidationInfo) -> Any:
        try:
            return handler(value)
        except ValidationError:
            shown = repr(value)  # cut short: an oversized input should not flood logs
            raise PydanticCustomError("slo_target", "must be {what} or None, got {value}", {
                "what": _WHAT[info.field_name],
                "value": shown if len(shown) <= 40 else shown[:37] + "..."}) from None

    @property
    def targets(self) -> SloTargets:
        """The targets in force: each one set, else the default's."""
        return SloTargets(
            ttft_p95_s=DEFAULT_SLO.ttft_p95_s if self.ttft_p95_ms is None
            else self.ttft_p95_ms / 1000,
            itl_p95_s=DEFAULT_SLO.itl_p95_s if self.itl_p95_ms is None
            else self.itl_p95_ms / 1000,
            objective=DEFAULT_SLO.objective if self.objective is None else self.objective)

    @classmethod
    def of(cls, targets: SloTargets) -> SloSettings:
        """Every target set: e.g. DEFAULT_SLO is (2000, 200, 0.99)."""
        return cls(ttft_p95_ms=round(targets.ttft_p95_s * 1000),
                   itl_p95_ms=round(targets.itl_p95_s * 1000), objective=targets.objective)
