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

from observability.slo import DEFAULT_SLO, ItlP95Ms, SloSettings, SloTargets, TtftP95Ms
from serving.batch.files.rules import FileLimitOverrides, FileLimits

# The model path that means "the embedded demo model, made on first use under the data dir".
DEMO_MODEL = "builtin:demo"
# The embedded default's tenant: it owns the demo endpoint; its key is kept in the data dir.
DEFAULT_TENANT = "default"

EndpointName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
# Ray custom resources a replica asks for, e.g. {"engine_node": 1}: nodes started with
# `ray start --resources '{"engine_node": N}'` are the only ones that can host it. CPU, GPU and
# memory are Ray's own and follow from the partition and accelerators_per_replica instead.
RAY_BUILTIN_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})
CustomResources = dict[Annotated[str, Field(min_length=1, max_length=128)], PositiveFloat]


def _custom_only(value: dict[str, float]) -> dict[str, float]:
    builtin = sorted(RAY_BUILTIN_RESOURCES & set(value))
    if builtin:
        raise ValueError(f"Ray sets {', '.join(builtin)} itself from the partition and "
                         "accelerators_per_replica; name custom resources only")
    return value


class ConfigError(ValueError):
    """The config file is missing, not YAML, or not a valid platform description."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FilesConfig(FileLimits):
    """The Files API: where file bytes are kept, and each tenant's limits on its files
    unless the tenant's own `files` sets some (max_file_bytes, max_files, max_total_bytes)."""

    # None: $AIFACTORY_HOME/files. Every gateway replica must see the same folder: with
    # several replicas or nodes, a shared filesystem mounted at this path on each.
    storage_dir: str | None = None


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    # direct: the one gateway replica serves `port` itself (fewest hops, one replica per node).
    # haproxy: Ray Serve's HAProxy serves `port` and balances over several gateway replicas.
    ingress: Literal["direct", "haproxy"] = "direct"
    # Gateway replicas when no endpoint is colocated (else the colocated endpoint's replicas).
    gateway_replicas: PositiveInt = 1
    # Ray custom resources per gateway replica: on a cluster, puts the gateways on the nodes
    # that receive traffic (e.g. {"gateway_node": 1} on the head).
    resources: CustomResources = Field(default_factory=dict)
    # Bounds on one request body (serving.gateway.shape.RequestLimits): prompts in one
    # completion request, and nesting of its JSON.
    max_prompts_per_request: Annotated[int, Field(ge=1, le=100_000)] = 2048
    max_json_depth: Annotated[int, Field(ge=8, le=1000)] = 64
    # Stored Responses API responses (`store: true`) are kept this long, then gone.
    response_retention_days: Annotated[float, Field(gt=0, le=3650)] = 30
    files: FilesConfig = Field(default_factory=FilesConfig)

    _custom_resources = field_validator("resources")(_custom_only)


class AutoscalerConfig(_Strict):
    """The partition controller: how often it decides and how long a request may wait for an
    endpoint at zero replicas to wake. `tuning` holds autoscaling.PolicyTuning fields."""

    period_s: PositiveFloat = 5.0
    # Reports older than this leave the signals (running/waiting means, latency percentiles).
    window_s: PositiveFloat = 15.0
    # A request to an endpoint at zero waits this long for a replica, then gets 503.
    wake_timeout_s: PositiveFloat = 120.0
    tuning: dict[str, Any] = Field(default_factory=dict)

    @field_validator("tuning")
    @classmethod
    def _known_tuning(cls, value: dict[str, Any]) -> dict[str, Any]:
        from autoscaling.spec import PolicyTuning

        PolicyTuning.model_validate(value)
        return value


class PartitionConfig(_Strict):
    """The fixed pool the endpoints share: GPUs on an accelerator node, CPU slots here."""

    accelerator: Literal["cpu", "gpu"] = "cpu"
    # Logical slots Ray may hand out. On the CPU these are Ray's logical CPUs, which may exceed
    # the physical cores (Ray counts CPUs logically; see ENVIRONMENT.md).
    count: PositiveFloat = 8
    autoscaler: AutoscalerConfig = Field(default_factory=AutoscalerConfig)


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
    # Given, it replaces the tenant's targets (a target left out is the platform default,
    # DEFAULT_SLO); left out, the store keeps what it has.
    slo: SloSettings | None = None
    # Its own limits on its files (Files API), over server.files'; left out, the store keeps
    # what it has.
    files: FileLimitOverrides | None = None


_DEFAULT_SLO_MS = SloSettings.of(DEFAULT_SLO)


class EndpointSloConfig(_Strict):
    """The latency an endpoint's replicas must keep (p95); the autoscaler adds a replica when
    they do not."""

    ttft_p95_ms: TtftP95Ms = _DEFAULT_SLO_MS.ttft_p95_ms  # 2000
    itl_p95_ms: ItlP95Ms = _DEFAULT_SLO_MS.itl_p95_ms  # 200

    @property
    def targets(self) -> SloTargets:
        return SloTargets(ttft_p95_s=self.ttft_p95_ms / 1000, itl_p95_s=self.itl_p95_ms / 1000)


class EndpointAutoscalingConfig(_Strict):
    """Hands the endpoint's replica count to the partition autoscaler. `replicas` is then the
    count it starts with."""

    min_replicas: NonNegativeInt = 0
    max_replicas: PositiveInt
    # Its reserved share of the partition, granted within one decision when it has demand.
    guaranteed_replicas: NonNegativeInt = 0
    # Higher is lent to first and reclaimed from last.
    priority: int = 0
    slo: EndpointSloConfig = Field(default_factory=EndpointSloConfig)
    target_ongoing_per_replica: PositiveFloat = 16.0
    # Seconds without demand before scaling to min_replicas; null keeps one replica warm.
    idle_to_zero_s: PositiveFloat | None = 600.0


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
    # Requests each gateway replica holds for this endpoint while all its replicas are at
    # max_ongoing_requests; beyond that a request is refused at once with 503 and Retry-After
    # instead of waiting (and holding memory) until its client times out. See max_in_flight.
    max_queued_requests: PositiveInt = 512
    # Host this endpoint's engine inside the gateway replicas (at most one endpoint): no hop
    # between engine and client on the token path. Its replicas are then the gateway's.
    colocated: bool = False
    engine: EngineConfig = Field(default_factory=EngineConfig)
    autoscaling: EndpointAutoscalingConfig | None = None
    # Ray custom resources per replica, beside its accelerators: pins the endpoint's engines
    # to the nodes that offer them (e.g. a GPU worker group started with {"engine_node": 8}).
    resources: CustomResources = Field(default_factory=dict)

    _custom_resources = field_validator("resources")(_custom_only)

    @property
    def slots(self) -> int:
        """Requests this endpoint's engines run at once, as one gateway replica counts them:
        colocated, its own engine; autoscaled, the replicas it may grow to."""
        replicas = (1 if self.colocated else
                    self.autoscaling.max_replicas if self.autoscaling is not None else
                    self.replicas)
        return self.max_ongoing_requests * replicas

    @property
    def max_in_flight(self) -> int:
        """Requests one gateway replica has in flight to this endpoint at most: its slots
        and the queue."""
        return self.slots + self.max_queued_requests

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
        for i, e in enumerate(self.endpoints):
            if e.autoscaling is None:
                continue
            if e.colocated:
                raise ValueError(f"endpoints.{i} ({e.name}) is colocated with the gateway and "
                                 "cannot be autoscaled: its replicas are the gateway's")
            if not e.autoscaling.min_replicas <= e.replicas <= e.autoscaling.max_replicas:
                raise ValueError(f"endpoints.{i} ({e.name}) starts with {e.replicas} replicas, "
                                 f"outside autoscaling.min_replicas..max_replicas")
            if e.autoscaling.min_replicas == 0 and e.engine.max_model_len is None:
                raise ValueError(f"endpoints.{i} ({e.name}) may scale to zero and then has no "
                                 "engine to ask its context length: set engine.max_model_len")
        self.autoscaled_partition()  # guarantees beyond the partition are refused here
        wanted = sum(e.replicas * e.accelerators_per_replica for e in self.endpoints)
        if wanted > self.partition.count:
            raise ValueError(
                f"endpoints ask for {wanted:g} {self.partition.accelerator} slots in all "
                f"(replicas x accelerators_per_replica) but partition.count is "
                f"{self.partition.count:g}"
            )
        return self

    def autoscaled_partition(self):
        """The autoscaler's view (autoscaling.PartitionSpec) of the share of the partition
        left after the fixed-size endpoints; None when no endpoint is autoscaled."""
        from deployments.partition import autoscaled_partition

        return autoscaled_partition(self.partition, self.endpoints)

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


# The demo model run as an embedding model: vLLM's `--convert embed` puts a pooling head
# (the last token's hidden state, normalised) on the decoder, so the embedded default needs
# no second checkpoint and no download. Real deployments use a trained embedding model.
DEMO_EMBED_ENGINE = {
    "max_model_len": 512,
    "dtype": "bfloat16",
    "kv_cache_memory_bytes": 64 * 1024**2,
    "enforce_eager": True,
    "extra_args": {"runner": "pooling", "convert": "embed"},
}


def default_config(port: int | None = None) -> PlatformConfig:
    """The embedded default: the demo model as one CPU endpoint named `demo` (colocated with
    the gateway, LoRA adapters enabled), and as an embedding model, `demo-embed` (an engine
    deployment)."""
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
                        # Tenants' LoRA adapters on the demo model (`aifactory demo-adapter`
                        # makes one): four applied per engine step, rank up to 16.
                        "extra_args": {"enable_lora": True, "max_lora_rank": 16,
                                       "max_loras": 4},
                    },
                },
                {
                    "name": "demo-embed",
                    "owner": DEFAULT_TENANT,
                    "model": DEMO_MODEL,
                    "engine": DEMO_EMBED_ENGINE,
                },
            ],
        },
        "the embedded default config",
    )
    if port is not None:
        cfg = cfg.model_copy(update={"server": cfg.server.model_copy(update={"port": port})})
    return cfg
