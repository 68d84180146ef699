"""What a replica of a model needs, and how many accelerators of each kind to give it: pure.

A replica holds the weights once and a KV cache for the requested context length times the
requested concurrency. Per token the KV cache holds a key and a value for every layer and
KV head: 2 x layers x kv_heads x head_dim x bytes per element. E.g. the demo model
(2 layers, 1 KV head, head_dim 64, bf16): 2 x 2 x 1 x 64 x 2 = 512 bytes per token, which is
what vLLM's CPU engine allots (131,072 tokens in a 64 MiB cache).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from serving.catalogue.facts import ModelFacts

DTYPE_BYTES = {"float64": 8, "float32": 4, "float": 4, "float16": 2, "half": 2,
               "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1, "fp8": 1, "int8": 1}
# Ray accepts resource fractions to four decimals: a share is rounded down to that, so that
# `copies` replicas of it still fit one device.
_RESOURCE_QUANTUM = 10_000
# Tensor-parallel sizes tried, smallest first; engines split heads evenly over them.
_TP_SIZES = (1, 2, 4, 8, 16, 32, 64)


class SizingError(ValueError):
    """The facts lack a size the estimate needs, or the request exceeds the model."""


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int
    kv_bytes_per_token: int
    tokens: int  # context_length x concurrency
    kv_cache_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes


@dataclass(frozen=True)
class ReplicaProposal:
    """How to place one replica on one accelerator kind, and why."""

    accelerator: str
    fits: bool
    accelerators_per_replica: float
    tensor_parallel_size: int
    copies_per_device: int  # replicas sharing one device (1 when a replica spans devices)
    need_bytes_per_device: int
    usable_bytes_per_device: int
    reason: str


def kv_bytes_per_token(facts: ModelFacts, dtype: str | None = None) -> int:
    """The KV cache's bytes per token in `dtype` (vLLM's default: the model's dtype)."""
    s = facts.shape
    missing = [k for k, v in (("num_hidden_layers", s.num_hidden_layers),
                              ("num_key_value_heads", s.num_key_value_heads),
                              ("head_dim", s.head_dim)) if not v]
    if missing:
        raise SizingError(f"config.json gives no {', '.join(missing)}: the KV cache is unknown")
    return 2 * s.num_hidden_layers * s.num_key_value_heads * s.head_dim * _dtype_bytes(
        dtype or facts.config_dtype or facts.weights.dtype)


def _dtype_bytes(dtype: str | None) -> int:
    if dtype not in DTYPE_BYTES:
        raise SizingError(f"dtype {dtype!r} has no known size; name the serving dtype")
    return DTYPE_BYTES[dtype]


def estimate_memory(facts: ModelFacts, context_length: int, concurrency: int,
                    dtype: str | None = None) -> MemoryEstimate:
    """Weights + the KV cache for `concurrency` sequences of `context_length` tokens each,
    served in `dtype` (vLLM's `dtype`; None: as stored, the KV cache in config.json's)."""
    if context_length < 1 or concurrency < 1:
        raise SizingError("context_length and concurrency must be at least 1")
    if facts.context_length is not None and context_length > facts.context_length:
        raise SizingError(f"context length {context_length} exceeds the model's "
                          f"{facts.context_length} ({facts.context_length_key})")
    per_token = kv_bytes_per_token(facts, dtype)
    tokens = context_length * concurrency
    weights = (facts.weights.parameter_count * _dtype_bytes(dtype) if dtype
               else facts.weights.total_bytes)
    return MemoryEstimate(weights_bytes=weights, kv_bytes_per_token=per_token,
                          tokens=tokens, kv_cache_bytes=per_token * tokens)


def propose_replicas(estimate: MemoryEstimate, device_bytes: Mapping[str, int],
                     attention_heads: int | None, usable_fraction: float = 0.9,
                     ) -> dict[str, ReplicaProposal]:
    """For each accelerator kind (e.g. {"cpu": bytes per slot, "gpu": 80 GiB}), the smallest
    placement that holds `estimate`: a share of one device when several copies fit one, else
    the smallest tensor-parallel size that divides the attention heads and splits the need
    (weights and KV cache alike) into parts that fit. `usable_fraction` leaves the rest of
    each device to activations and the runtime (vLLM's gpu_memory_utilization)."""
    return {kind: _propose(kind, estimate.total_bytes, int(size * usable_fraction),
                           attention_heads)
            for kind, size in device_bytes.items()}


def _propose(kind: str, need: int, usable: int, heads: int | None) -> ReplicaProposal:
    if usable <= 0:
        return ReplicaProposal(kind, False, 0.0, 0, 0, need, usable,
                               f"a {kind} device offers no usable memory")
    if kind == "cpu":
        # A CPU slot is a core (a Ray logical CPU) as much as its share of memory: an engine
        # computes on whole cores, so it takes at least one slot, more where it needs more
        # of the host's memory than one slot's share.
        slots = max(1, math.ceil(need / usable))
        return ReplicaProposal(kind, True, float(slots), 1, 1, need, usable, (
            f"{_gib(need)} needed, {_gib(usable)} usable per cpu slot: an engine computes "
            f"on whole cores, so it takes {slots} slot(s)"))
    if need <= usable:
        # E.g. need 30 GiB on 72 GiB usable: 2 copies fit, each replica takes 0.5 of a device.
        copies = max(1, min(usable // max(need, 1), _RESOURCE_QUANTUM))
        share = math.floor(_RESOURCE_QUANTUM / copies) / _RESOURCE_QUANTUM
        return ReplicaProposal(kind, True, share, 1, copies, need, usable, (
            f"{_gib(need)} needed, {_gib(usable)} usable per {kind}: "
            f"{copies} replica(s) fit one, each takes {share:g} of it"))
    for tp in _TP_SIZES:
        if heads is not None and heads % tp:
            continue
        per_device = math.ceil(need / tp)
        if per_device <= usable:
            return ReplicaProposal(kind, True, float(tp), tp, 1, per_device, usable, (
                f"{_gib(need)} needed, {_gib(usable)} usable per {kind}: split over "
                f"tensor_parallel_size={tp} ({_gib(per_device)} each)"))
    return ReplicaProposal(kind, False, 0.0, 0, 0, need, usable, (
        f"{_gib(need)} needed, {_gib(usable)} usable per {kind}: no tensor-parallel size up to "
        f"{_TP_SIZES[-1]} dividing {heads} attention heads fits"))


def _gib(n: int) -> str:
    return f"{n / 1024**3:.3g} GiB" if n >= 1024**3 else f"{n / 1024**2:.3g} MiB"
