"""Where a catalogue entry fits: sizing.py's estimate and proposals for a registered model, and
an endpoint's deployment completed from them. Pure: the device sizes are handed in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from serving.catalogue.model_record import CatalogueModel
from serving.catalogue.sizing import (
    MemoryEstimate,
    ReplicaProposal,
    SizingError,
    estimate_memory,
    propose_replicas,
)
from serving.tenancy import Invalid

DEFAULT_CONCURRENCY = 8  # sequences a replica is sized to hold at full context at once
# Kinds where a replica split over devices needs the engine to split it too.
_TENSOR_PARALLEL_KINDS = frozenset({"gpu"})


@dataclass(frozen=True)
class Sizing:
    """What a replica needs for `concurrency` sequences of `context_length` tokens, and how
    to place one on each accelerator kind; `error` says why there is no estimate."""

    context_length: int | None
    concurrency: int
    estimate: MemoryEstimate | None = None
    proposals: dict[str, ReplicaProposal] = field(default_factory=dict)
    error: str | None = None


def size(entry: CatalogueModel, device_bytes: Mapping[str, int],
         context_length: int | None = None,
         concurrency: int = DEFAULT_CONCURRENCY) -> Sizing:
    """At the registered context length unless one is given (e.g. an endpoint's
    max_model_len)."""
    length = context_length or entry.context_length
    if length is None:
        return Sizing(None, concurrency, error="config.json gives no context length: pass "
                                               "max_model_len")
    try:
        estimate = estimate_memory(entry.as_facts(), length, concurrency)
    except SizingError as exc:
        return Sizing(length, concurrency, error=str(exc))
    return Sizing(length, concurrency, estimate,
                  propose_replicas(estimate, device_bytes, entry.shape.num_attention_heads))


def catalogue_deployment(entry: CatalogueModel, deployment: dict[str, Any],
                         accelerator: str, device_bytes: Mapping[str, int]) -> dict[str, Any]:
    """`deployment` (an endpoint's, whose model named `entry`) running the entry's folder,
    recorded under `catalogue`, with the proposal for `accelerator` filled in where the
    caller gave none: accelerators_per_replica, and on GPUs the tensor-parallel size. Sized
    for the engine's max_model_len and max_num_seqs (else DEFAULT_CONCURRENCY) sequences."""
    if not isinstance(deployment.get("engine") or {}, dict):
        raise Invalid("deployment.engine", "must be an object of engine arguments")
    engine = dict(deployment.get("engine") or {})
    placed = {**deployment, "model": entry.source, "catalogue": entry.name, "engine": engine}
    wants_apr = "accelerators_per_replica" not in deployment
    wants_tp = accelerator in _TENSOR_PARALLEL_KINDS and "tensor_parallel_size" not in engine
    if not (wants_apr or wants_tp):
        return placed
    length, seqs = engine.get("max_model_len"), engine.get("max_num_seqs")
    sized = size(entry, {accelerator: device_bytes[accelerator]},
                 length if isinstance(length, int) else None,
                 seqs if isinstance(seqs, int) and seqs > 0 else DEFAULT_CONCURRENCY)
    if sized.error is not None:
        raise Invalid("deployment.model", f"catalogue entry {entry.name!r} cannot be sized "
                                          f"({sized.error}); give accelerators_per_replica")
    proposal = sized.proposals[accelerator]
    if not proposal.fits:
        raise Invalid("deployment.model", f"catalogue entry {entry.name!r} does not fit: "
                                          f"{proposal.reason}")
    if wants_apr:
        placed["accelerators_per_replica"] = proposal.accelerators_per_replica
    if wants_tp and proposal.tensor_parallel_size > 1:
        engine["tensor_parallel_size"] = proposal.tensor_parallel_size
    return placed
