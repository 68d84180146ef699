"""The engine profile file: what one measuring run found, on which machine, and its fits.

One JSON object, versioned (`schema`, `schema_version`). `fitted` is what the simulator
uses; `measured` keeps the medians' raw repeats so a fit can be checked or redone. Reading
a file (load_profile) checks everything before anyone uses a figure: a file that is not
such a profile, or a hostile one (huge, deeply nested, NaN, negative or absurd times,
unknown fields), is refused with one ProfileError naming the field, never a traceback from
inside the simulator.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from autoscaling.profile.fit import PHASES

SCHEMA = "aifactory.engine-profile"
SCHEMA_VERSION = 1
MAX_FILE_BYTES = 1_000_000  # a real profile is a few kilobytes

# A step or a prefill between a microsecond and a minute; a cold start up to a day.
StepSeconds = Annotated[float, Field(gt=1e-6, le=60.0)]
SlopeSeconds = Annotated[float, Field(ge=0.0, le=60.0)]
PhaseSeconds = Annotated[float, Field(ge=0.0, le=86_400.0)]
Text = Annotated[str, Field(max_length=1000)]
Size = Annotated[int, Field(gt=0, le=1 << 20)]  # a prompt length or a batch size


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Machine(_Strict):
    """Where the figures were measured: they hold for this machine, not in general."""

    accelerator: Literal["cpu", "gpu"]
    cpu_model: Text
    cores: PositiveInt  # logical CPUs of the machine
    usable_cores: PositiveInt  # of those, the ones the run could use (affinity)
    memory_bytes: PositiveInt
    gpu_model: Text | None = None
    platform: Text
    python: Text
    vllm_version: Text
    torch_version: Text


class LoadAverage(_Strict):
    """The machine's 1-minute load average around and during the run: above the cores the
    run had, other work shared them and the times are inflated."""

    before: NonNegativeFloat
    mean: NonNegativeFloat
    max: NonNegativeFloat
    after: NonNegativeFloat


class Settings(_Strict):
    prompt_lengths: list[Size] = Field(min_length=2, max_length=64)
    batch_sizes: list[Size] = Field(min_length=2, max_length=64)
    decode_tokens: Annotated[int, Field(ge=4, le=1 << 16)]
    repeats: Annotated[int, Field(ge=1, le=1000)]


class Run(_Strict):
    date: datetime
    duration_s: PhaseSeconds
    load_average: LoadAverage
    settings: Settings


class Engine(_Strict):
    model: Text  # the folder measured
    model_name: Text
    engine_args: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")], Any] = Field(
        max_length=200)
    max_num_seqs: PositiveInt
    max_model_len: PositiveInt


class KvCache(_Strict):
    blocks: PositiveInt
    block_size: PositiveInt
    tokens: PositiveInt

    @model_validator(mode="after")
    def _tokens_are_blocks(self) -> KvCache:
        if self.tokens != self.blocks * self.block_size:
            raise ValueError(f"tokens ({self.tokens}) must be blocks x block_size "
                             f"({self.blocks} x {self.block_size})")
        return self


class Measured(_Strict):
    """Raw repeats: prompt length -> seconds to the first token of a request alone; batch
    size -> seconds per decode step with that many sequences running."""

    prefill_s: dict[Size, list[StepSeconds]] = Field(min_length=2, max_length=64)
    decode_step_s: dict[Size, list[StepSeconds]] = Field(min_length=2, max_length=64)
    kv_cache: KvCache
    cold_start_s: dict[Literal[PHASES], PhaseSeconds]  # type: ignore[valid-type]

    @field_validator("prefill_s", "decode_step_s")
    @classmethod
    def _repeats(cls, value: dict[int, list[float]]) -> dict[int, list[float]]:
        for size, samples in value.items():
            if not 1 <= len(samples) <= 1000:
                raise ValueError(f"{size}: between 1 and 1000 repeats, got {len(samples)}")
        return value

    @field_validator("cold_start_s")
    @classmethod
    def _every_phase(cls, value: dict[str, float]) -> dict[str, float]:
        missing = [phase for phase in PHASES if phase not in value]
        if missing:
            raise ValueError(f"missing phases: {', '.join(missing)}")
        return value


class Line(_Strict):
    intercept_s: SlopeSeconds
    slope_s: SlopeSeconds
    r2: Annotated[float, Field(ge=0.0, le=1.0)]


class Fitted(_Strict):
    """prefill: seconds to the first token of a prompt alone = intercept + slope x tokens;
    decode_step: seconds per step = intercept + slope x running sequences; cold_start_s:
    launch to first token (the sum of the measured phases)."""

    prefill: Line
    decode_step: Line
    cold_start_s: Annotated[float, Field(gt=0.0, le=86_400.0)]

    @model_validator(mode="after")
    def _positive(self) -> Fitted:
        for name in ("prefill", "decode_step"):
            line: Line = getattr(self, name)
            if line.intercept_s + line.slope_s <= 1e-6:
                raise ValueError(f"{name}: a step must take time (intercept + slope > 1 us)")
        return self


class EngineProfileFile(_Strict):
    """The file, whole."""

    schema_: Literal["aifactory.engine-profile"] = Field(alias="schema")
    schema_version: Literal[1]
    machine: Machine
    engine: Engine
    run: Run
    measured: Measured
    fitted: Fitted
    note: Text = ""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              populate_by_name=True)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2) + "\n"


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ())) or "the file"
        parts.append(f"{where}: {item.get('msg')}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not a number a profile may hold")


def parse_profile(text: str | bytes, source: str = "profile") -> EngineProfileFile:
    """Checks a profile's text; ProfileError says what is wrong and where."""
    if len(text) > MAX_FILE_BYTES:
        raise ProfileError(f"{source}: {len(text)} bytes, more than a profile's "
                           f"{MAX_FILE_BYTES}")
    try:
        data = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise ProfileError(f"{source}: not JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: a profile is a JSON object, not {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise ProfileError(f"{source}: not an engine profile (schema should be {SCHEMA!r}; "
                           "`python -m autoscaling.profile` writes one)")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ProfileError(f"{source}: schema_version {data.get('schema_version')!r}; this "
                           f"version reads {SCHEMA_VERSION}: measure again")
    try:
        return EngineProfileFile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"{source}: {_describe(exc)}") from None
    except RecursionError:
        raise ProfileError(f"{source}: nested too deeply") from None


def load_profile(path: str | os.PathLike[str]) -> EngineProfileFile:
    """Reads and checks a profile file (see parse_profile)."""
    path = Path(path)
    try:
        if not path.is_file():
            raise ProfileError(f"{path}: no such file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ProfileError(f"{path}: {path.stat().st_size} bytes, more than a profile's "
                               f"{MAX_FILE_BYTES}")
        text = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return parse_profile(text, str(path))
