"""The platform's declarative configuration: one YAML file, validated by pydantic at load."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

# The model path that means "the embedded demo model, made on first use under the data dir".
DEMO_MODEL = "builtin:demo"
# The embedded default's tenant: it owns the demo endpoint; its key is kept in the data dir.
DEFAULT_TENANT = "default"

EndpointName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]


class ConfigError(ValueError):
    """The config file is missing, not YAML, or not a valid platform description."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    # direct: the one gateway replica serves `port` itself (fewest hops, one replica per node).
    # haproxy: Ray Serve's HAProxy serves `port` and balances over several gateway replicas.
    ingress: Literal["direct", "haproxy"] = "direct"
    # Gateway replicas when no endpoint is colocated (else the colocated endpoint's replicas).
    gateway_replicas: PositiveInt = 1


class PartitionConfig(_Strict):
    """The fixed pool the endpoints share: GPUs on an accelerator node, CPU slots here."""

    accelerator: Literal["cpu", "gpu"] = "cpu"
    # Logical slots Ray may hand out. On the CPU these are Ray's logical CPUs, which may exceed
    # the physical cores (Ray counts CPUs logically; see ENVIRONMENT.md).
    count: PositiveFloat = 8


class EngineConfig(_Strict):
    """vLLM engine arguments. Named fields are the common ones; `extra_args` passes any other
    `vllm serve` flag through (validated by vLLM's own parser when the engine starts)."""

    max_model_len: PositiveInt | None = None
    dtype: Literal["auto", "bfloat16", "float16", "float32", "half", "float"] = "auto"
    tensor_parallel_size: PositiveInt = 1
    # KV-cache size in bytes. Several engines on one CPU machine each need a small, explicit one.
    kv_cache_memory_bytes: PositiveInt | None = None
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] | None = None
    max_num_seqs: PositiveInt | None = None
    enforce_eager: bool | None = None
    seed: NonNegativeInt | None = None
    extra_args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("extra_args")
    @classmethod
    def _flag_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not re.fullmatch(r"[a-z][a-z0-9_-]*", key):
                raise ValueError(f"{key!r} is not a vLLM flag name (e.g. enable_prefix_caching)")
        return value


class QuotaConfig(_Strict):
    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None
    concurrent_requests: PositiveInt | None = None
    tokens_per_month: PositiveInt | None = None


class TenantConfig(_Strict):
    name: EndpointName
    priority: Literal["critical", "standard", "best_effort"] = "standard"
    quota: QuotaConfig | None = None


class EndpointConfig(_Strict):
    name: EndpointName
    # The tenant that owns the endpoint; None makes it shared, open to `shared_with`.
    owner: EndpointName | None = None
    shared_with: list[EndpointName] = Field(default_factory=list)
    # A Hugging Face model folder (no hub here), or "builtin:demo".
    model: str
    replicas: NonNegativeInt = 1
    # Accelerators (GPUs, or CPU slots on the CPU) per replica; fractions share one device.
    accelerators_per_replica: PositiveFloat = 1.0
    # Requests one replica takes at once before Ray Serve queues; vLLM batches them all.
    max_ongoing_requests: PositiveInt = 256
    # Host this endpoint's engine inside the gateway replicas (at most one endpoint): no hop
    # between engine and client on the token path. Its replicas are then the gateway's.
    colocated: bool = False
    engine: EngineConfig = Field(default_factory=EngineConfig)

    @model_validator(mode="after")
    def _tensor_parallel_needs_whole_devices(self) -> "EndpointConfig":
        tp = self.engine.tensor_parallel_size
        if tp > 1 and self.accelerators_per_replica < tp:
            raise ValueError(
                f"accelerators_per_replica ({self.accelerators_per_replica}) must be at least "
                f"engine.tensor_parallel_size ({tp})"
            )
        return self


class PlatformConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    tenants: list[TenantConfig] = Field(default_factory=list)
    endpoints: list[EndpointConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _endpoints_fit(self) -> "PlatformConfig":
        names = [e.name for e in self.endpoints]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"endpoint names must be unique; repeated: {', '.join(dupes)}")
        tenants = {t.name for t in self.tenants}
        for i, e in enumerate(self.endpoints):
            unknown = sorted({e.owner, *e.shared_with} - tenants - {None})
            if unknown:
                raise ValueError(
                    f"endpoints.{i} ({e.name}) names tenants not declared under tenants: "
                    f"{', '.join(unknown)}"
                )
        colocated = [e.name for e in self.endpoints if e.colocated]
        if len(colocated) > 1:
            raise ValueError(
                f"at most one endpoint can be colocated with the gateway; got {', '.join(colocated)}"
            )
        if colocated and self.endpoint(colocated[0]).replicas < 1:
            raise ValueError(f"the colocated endpoint {colocated[0]} needs at least one replica")
        gateway_replicas = (self.endpoint(colocated[0]).replicas if colocated
                            else self.server.gateway_replicas)
        if colocated and self.server.gateway_replicas != 1:
            raise ValueError("server.gateway_replicas applies without a colocated endpoint; the "
                             f"gateway runs {colocated[0]}'s replicas")
        if gateway_replicas > 1 and self.server.ingress == "direct":
            raise ValueError(f"{gateway_replicas} gateway replicas need server.ingress: haproxy "
                             "(direct ingress serves one port from one replica)")
        wanted = sum(e.replicas * e.accelerators_per_replica for e in self.endpoints)
        if wanted > self.partition.count:
            raise ValueError(
                f"endpoints ask for {wanted:g} {self.partition.accelerator} slots in all "
                f"(replicas x accelerators_per_replica) but partition.count is "
                f"{self.partition.count:g}"
            )
        return self

    def endpoint(self, name: str) -> EndpointConfig:
        for e in self.endpoints:
            if e.name == name:
                return e
        raise KeyError(name)


def _describe(error: ValidationError) -> str:
    lines = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "config") -> PlatformConfig:
    try:
        return PlatformConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source} is not a valid platform config:\n{_describe(exc)}") from None


def load_config(path: str | os.PathLike) -> PlatformConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}") from None
    return parse_config(data, str(p))


def default_config(port: int | None = None) -> PlatformConfig:
    """The embedded default: the demo model as one CPU endpoint named `demo`."""
    cfg = parse_config(
        {
            "partition": {"accelerator": "cpu", "count": 8},
            "tenants": [{"name": DEFAULT_TENANT}],
            "endpoints": [
                {
                    "name": "demo",
                    "owner": DEFAULT_TENANT,
                    "model": DEMO_MODEL,
                    "colocated": True,
                    "engine": {
                        "max_model_len": 2048,
                        "dtype": "bfloat16",
                        "kv_cache_memory_bytes": 256 * 1024**2,
                    },
                }
            ],
        },
        "the embedded default config",
    )
    if port is not None:
        cfg = cfg.model_copy(update={"server": cfg.server.model_copy(update={"port": port})})
    return cfg
