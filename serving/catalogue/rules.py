"""Whether a checkpoint may be registered: pure checks over the facts (facts.py).

Each check returns every Problem it finds, naming the file and the reason, so an operator
fixes a folder in one pass. The architectures vLLM supports are passed in (vllm_support.py
reads them from the installed vLLM), so these rules need no engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from serving.catalogue.facts import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    CONFIG,
    TOKENIZER,
    TOKENIZER_CONFIG,
    AdapterFacts,
    ModelFacts,
    Problem,
)

# The whole folder, where a problem is about no single file (its digest).
FOLDER = "(folder)"
# peft's prefix before the base model's own module names in an adapter's tensors.
_PEFT_PREFIX = "base_model.model."
# An adapter tensor's suffix -> (the base weight's suffix, which dimension of the base
# weight must equal which dimension of the adapter tensor). A Linear weight is [out, in],
# an Embedding's [vocab, dim]; lora_A is [r, in] and lora_B [out, r].
_LORA_TENSORS = {
    ".lora_A.weight": (".weight", 1, 1),
    ".lora_B.weight": (".weight", 0, 0),
    ".lora_embedding_A": (".weight", 0, 1),
    ".lora_embedding_B": (".weight", 1, 0),
}


def check_model(facts: ModelFacts, supported_architectures: Iterable[str],
                expected_digest: str | None = None) -> list[Problem]:
    """Everything that keeps `facts`' folder from being served by the installed vLLM."""
    return [
        *facts.problems,
        *_architecture(facts, frozenset(supported_architectures)),
        *_weights_complete(facts),
        *_tokenizer(facts),
        *_digest(facts.digest, expected_digest),
    ]


def check_adapter(adapter: AdapterFacts, base: ModelFacts, max_lora_rank: int | None,
                  expected_digest: str | None = None) -> list[Problem]:
    """Everything that keeps `adapter` from being applied to `base` on an endpoint whose
    engine has `max_lora_rank` (None: LoRA is not enabled there).

    The base is matched by structure, not by name: base_model_name_or_path is whatever the
    maker loaded (often a path on their machine), so it is not compared. The adapter's
    recorded base class must be among the base's architectures, and every module it adapts
    must exist in the base's weights with the sizes the adapter's tensors were made for
    (which is what hidden size and vocabulary size come down to)."""
    return [
        *adapter.problems,
        *_adapter_files(adapter),
        *_rank(adapter, max_lora_rank),
        *_base_architecture(adapter, base),
        *_targets_in_base(adapter, base),
        *_digest(adapter.digest, expected_digest),
    ]


# -- models ----------------------------------------------------------------------------------


def _architecture(facts: ModelFacts, supported: frozenset[str]) -> list[Problem]:
    if CONFIG not in facts.files:
        return [Problem(CONFIG, "is missing: the model's architecture and sizes are unknown")]
    if not facts.architectures:
        return [Problem(CONFIG, "names no architectures")]
    if any(a in supported for a in facts.architectures):
        return []
    names = ", ".join(facts.architectures)
    return [Problem(CONFIG, f"architecture {names} is not supported by the installed vLLM "
                            f"({len(supported)} architectures are)")]


def _weights_complete(facts: ModelFacts) -> list[Problem]:
    w = facts.weights
    if w.index_file is None and not w.files_named:
        bins = [n for n in facts.files if n.endswith((".bin", ".pt"))]
        reason = (f"weights only as PyTorch pickles ({', '.join(bins)}); safetensors are needed"
                  if bins else "no weights: no *.safetensors file and no "
                               "model.safetensors.index.json")
        return [Problem(FOLDER, reason)]
    problems = [
        Problem(name, f"is named by {w.index_file} but missing" if w.index_file
                else "is missing")
        for name in w.files_named if name not in facts.files
    ]
    if w.index_file and not w.files_named:
        problems.append(Problem(w.index_file, "names no weight files (empty weight_map)"))
    return problems


def _tokenizer(facts: ModelFacts) -> list[Problem]:
    if facts.has_tokenizer:
        return []
    if TOKENIZER_CONFIG in facts.files:
        return [Problem(TOKENIZER_CONFIG, "has no vocabulary beside it (no tokenizer.json, "
                                          "vocab.json, tokenizer.model or similar)")]
    return [Problem(TOKENIZER, f"is missing, and so is {TOKENIZER_CONFIG}: no tokenizer")]


def _digest(actual: str, expected: str | None) -> list[Problem]:
    if expected is None or actual == expected:
        return []
    return [Problem(FOLDER, f"content digest {actual} does not match the expected {expected}")]


# -- adapters --------------------------------------------------------------------------------


def _adapter_files(adapter: AdapterFacts) -> list[Problem]:
    problems = []
    if ADAPTER_CONFIG not in adapter.files:
        problems.append(Problem(ADAPTER_CONFIG, "is missing: not a peft adapter folder"))
    elif adapter.peft_type not in (None, "LORA"):
        problems.append(Problem(ADAPTER_CONFIG, f"peft_type is {adapter.peft_type}; only LORA "
                                                f"adapters are served"))
    if adapter.weights_file is None:
        problems.append(Problem(ADAPTER_WEIGHTS, "is missing"))
    return problems


def _rank(adapter: AdapterFacts, max_lora_rank: int | None) -> list[Problem]:
    if max_lora_rank is None:
        return [Problem(ADAPTER_CONFIG, "the endpoint does not enable LoRA (no max_lora_rank)")]
    if adapter.rank is None:
        return [Problem(ADAPTER_CONFIG, "has no rank r")] if adapter.files else []
    if adapter.rank > max_lora_rank:
        return [Problem(ADAPTER_CONFIG, f"rank r={adapter.rank} exceeds the endpoint's "
                                        f"max_lora_rank {max_lora_rank}")]
    return []


def _base_architecture(adapter: AdapterFacts, base: ModelFacts) -> list[Problem]:
    if adapter.base_architecture is None or adapter.base_architecture in base.architectures:
        return []
    return [Problem(ADAPTER_CONFIG, f"was made for a {adapter.base_architecture}, the endpoint's "
                                    f"model is {', '.join(base.architectures) or 'unknown'}")]


@dataclass(frozen=True)
class _Mismatch:
    tensor: str
    base_weight: str
    why: str


def _targets_in_base(adapter: AdapterFacts, base: ModelFacts) -> list[Problem]:
    base_shapes = base.weights.shapes
    problems = []
    if isinstance(adapter.target_modules, tuple):  # a regular expression is not checked
        modules = {n.rsplit(".", 1)[0] for n in base_shapes}
        # peft matches a target by the module's full name or its last parts.
        absent = [t for t in adapter.target_modules if t != "all-linear"
                  and not any(m == t or m.endswith("." + t) for m in modules)]
        if absent:
            problems.append(Problem(ADAPTER_CONFIG, f"target_modules {', '.join(absent)} do not "
                                                    f"exist in the endpoint's model"))
    mismatches = list(_shape_mismatches(adapter.weights.shapes, base_shapes))
    if mismatches:
        first = mismatches[0]
        problems.append(Problem(ADAPTER_WEIGHTS, (
            f"{len(mismatches)} tensor(s) do not fit the endpoint's model, e.g. {first.tensor}: "
            f"{first.why}; the adapter was made for another base model")))
    return problems


def _shape_mismatches(adapter_shapes: dict[str, tuple[int, ...]],
                      base_shapes: dict[str, tuple[int, ...]]) -> Iterable[_Mismatch]:
    for name, shape in sorted(adapter_shapes.items()):
        for suffix, (base_suffix, base_dim, own_dim) in _LORA_TENSORS.items():
            if not name.endswith(suffix):
                continue
            module = name.removeprefix(_PEFT_PREFIX)[: -len(suffix)]
            base_weight = module + base_suffix
            base_shape = base_shapes.get(base_weight)
            if base_shape is None:
                yield _Mismatch(name, base_weight, f"the model has no {base_weight}")
            elif len(base_shape) < 2 or len(shape) < 2:
                yield _Mismatch(name, base_weight, f"{base_weight} is not a matrix")
            elif base_shape[base_dim] != shape[own_dim]:
                yield _Mismatch(name, base_weight, (
                    f"shape {list(shape)} needs {base_weight} to have {shape[own_dim]} in "
                    f"dimension {base_dim}, it is {list(base_shape)}"))
