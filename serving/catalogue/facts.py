"""Reads the facts of a checkpoint folder (a model or a LoRA adapter) without loading weights.

Only config files and safetensors headers are parsed; the one full read is the content digest,
streamed. What cannot be read is recorded as a Problem naming the file, never raised, so the
rules (rules.py) can report every failure at once.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.catalogue.safetensors_header import DTYPE_NAMES, HeaderError, read_header

CONFIG = "config.json"
ADAPTER_CONFIG = "adapter_config.json"
TOKENIZER = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
WEIGHTS_INDEX = "model.safetensors.index.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Vocabulary files a tokenizer_config.json can stand on when there is no tokenizer.json:
# BPE (GPT-2 style), SentencePiece, WordPiece, tiktoken.
VOCAB_FILES = ("vocab.json", "merges.txt", "tokenizer.model", "spiece.model", "vocab.txt",
               "tiktoken.model", "qwen.tiktoken")
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
# The keys vLLM reads a model's context length from; it takes the smallest one present
# (vllm/transformers_utils/model_arch_config_convertor.py, derive_max_model_len_and_key).
CONTEXT_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length",
                       "model_max_length", "max_target_positions", "max_sequence_length",
                       "max_seq_length", "seq_len")
_DIGEST_CHUNK = 1024**2


@dataclass(frozen=True)
class Problem:
    """One reason a folder is refused, naming the file it is about."""

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


@dataclass(frozen=True)
class WeightsFacts:
    """What the safetensors headers say. `files_named` are the shards an index lists (or the
    single file); `files_read` those whose header was read."""

    index_file: str | None
    files_named: tuple[str, ...]
    files_read: tuple[str, ...]
    parameter_count: int
    total_bytes: int  # the tensors' data, as the engine holds them unquantised
    dtype: str | None  # the dtype holding most parameters, e.g. "bfloat16"
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, hash=False, repr=False)


@dataclass(frozen=True)
class ModelShape:
    """The sizes from config.json that memory and compatibility depend on (the text model's,
    for a multimodal config that nests them under text_config)."""

    num_hidden_layers: int | None
    hidden_size: int | None
    num_attention_heads: int | None
    num_key_value_heads: int | None  # the attention heads' count when the config omits it
    head_dim: int | None  # hidden_size / num_attention_heads when the config omits it
    vocab_size: int | None


@dataclass(frozen=True)
class ModelFacts:
    path: str
    files: tuple[str, ...]
    architectures: tuple[str, ...]
    model_type: str | None
    config_dtype: str | None
    shape: ModelShape
    context_length: int | None
    context_length_key: str | None
    weights: WeightsFacts
    tokenizer_files: tuple[str, ...]
    has_tokenizer: bool
    has_chat_template: bool
    digest: str
    problems: tuple[Problem, ...]  # what could not be read


@dataclass(frozen=True)
class AdapterFacts:
    path: str
    files: tuple[str, ...]
    peft_type: str | None
    base_model: str | None  # base_model_name_or_path: a name or a path on the maker's machine
    base_architecture: str | None  # auto_mapping.base_model_class, when peft recorded it
    rank: int | None  # the largest rank: r, or a larger one from rank_pattern
    lora_alpha: float | None
    target_modules: tuple[str, ...] | str  # a str is a regular expression over module names
    weights_file: str | None
    weights: WeightsFacts
    digest: str
    problems: tuple[Problem, ...]


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def folder_files(folder: Path) -> tuple[str, ...]:
    """Every regular file under `folder` as a sorted relative POSIX path; hidden files and
    folders (.git, .cache from hub downloads) are not part of a checkpoint."""
    names = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            names.append(rel.as_posix())
    return tuple(sorted(names))


def folder_digest(folder: str | Path, files: tuple[str, ...] | None = None) -> str:
    """sha256 over each file's name, length and bytes in sorted order: the same content under
    the same names gives the same digest on any machine, whatever the folder is called."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for name in folder_files(folder) if files is None else files:
        path = folder / name
        digest.update(name.encode() + b"\0" + path.stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as f:
            while chunk := f.read(_DIGEST_CHUNK):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def read_model_facts(path: str | Path, *, digest: bool = True) -> ModelFacts:
    """`digest=False` skips the one full read (the digest is then ""): an adapter's check
    needs only the base's config and headers, and a base's weights can be hundreds of GB."""
    folder = Path(path)
    files = folder_files(folder)
    problems: list[Problem] = []
    config = _read_json(folder, CONFIG, problems) if CONFIG in files else {}
    tok_config = _read_json(folder, TOKENIZER_CONFIG, problems) if TOKENIZER_CONFIG in files \
        else {}
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    sizes = {**config, **text}
    context_length, context_key = _context_length(sizes)
    tokenizer_files = tuple(n for n in (TOKENIZER, TOKENIZER_CONFIG, *VOCAB_FILES) if n in files)
    return ModelFacts(
        path=str(folder),
        files=files,
        architectures=tuple(config.get("architectures") or ()),
        model_type=config.get("model_type"),
        config_dtype=config.get("dtype") or config.get("torch_dtype"),
        shape=_shape(sizes),
        context_length=context_length,
        context_length_key=context_key,
        weights=_model_weights(folder, files, problems),
        tokenizer_files=tokenizer_files,
        has_tokenizer=TOKENIZER in files or (
            TOKENIZER_CONFIG in files and any(n in files for n in VOCAB_FILES)),
        has_chat_template=bool(tok_config.get("chat_template"))
        or any(n in files for n in CHAT_TEMPLATE_FILES),
        digest=folder_digest(folder, files) if digest else "",
        problems=tuple(problems),
    )


def read_adapter_facts(path: str | Path) -> AdapterFacts:
    folder = Path(path)
    files = folder_files(folder)
    problems: list[Problem] = []
    config = _read_json(folder, ADAPTER_CONFIG, problems) if ADAPTER_CONFIG in files else {}
    weights_file = ADAPTER_WEIGHTS if ADAPTER_WEIGHTS in files else None
    named = (weights_file,) if weights_file else ()
    ranks = [config.get("r"), *(config.get("rank_pattern") or {}).values()]
    ranks = [r for r in ranks if isinstance(r, int)]
    targets = config.get("target_modules") or ()
    return AdapterFacts(
        path=str(folder),
        files=files,
        peft_type=config.get("peft_type"),
        base_model=config.get("base_model_name_or_path"),
        base_architecture=(config.get("auto_mapping") or {}).get("base_model_class"),
        rank=max(ranks) if ranks else None,
        lora_alpha=config.get("lora_alpha"),
        target_modules=targets if isinstance(targets, str) else tuple(sorted(targets)),
        weights_file=weights_file,
        weights=_weights(folder, None, named, problems),
        digest=folder_digest(folder, files),
        problems=tuple(problems),
    )


# -- readers ---------------------------------------------------------------------------------


def _read_json(folder: Path, name: str, problems: list[Problem]) -> dict[str, Any]:
    try:
        data = json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(Problem(name, f"cannot be read as JSON ({exc})"))
        return {}
    if not isinstance(data, dict):
        problems.append(Problem(name, "is not a JSON object"))
        return {}
    return data


def _model_weights(folder: Path, files: tuple[str, ...], problems: list[Problem]) -> WeightsFacts:
    if WEIGHTS_INDEX in files:
        index = _read_json(folder, WEIGHTS_INDEX, problems)
        weight_map = index.get("weight_map") or {}
        named = tuple(sorted(set(weight_map.values())))
        return _weights(folder, WEIGHTS_INDEX, named, problems)
    # Unsharded: model.safetensors, or whatever *.safetensors sit at the top.
    named = tuple(n for n in files if n.endswith(".safetensors") and "/" not in n)
    return _weights(folder, None, named, problems)


def _weights(folder: Path, index: str | None, named: tuple[str, ...],
             problems: list[Problem]) -> WeightsFacts:
    read, shapes, params, nbytes = [], {}, 0, 0
    by_dtype: Counter[str] = Counter()
    for name in named:
        if not (folder / name).is_file():
            continue  # a missing shard is the rules' to report, with the index naming it
        try:
            entries = read_header(folder / name)
        except (OSError, HeaderError) as exc:
            problems.append(Problem(name, f"is not a readable safetensors file ({exc})"))
            continue
        read.append(name)
        for t in entries:
            shapes[t.name] = t.shape
            params += t.elements
            nbytes += t.nbytes
            by_dtype[t.dtype] += t.elements
    main = by_dtype.most_common(1)[0][0] if by_dtype else None
    return WeightsFacts(index_file=index, files_named=named, files_read=tuple(read),
                        parameter_count=params, total_bytes=nbytes,
                        dtype=DTYPE_NAMES.get(main, main) if main else None, shapes=shapes)


def _shape(sizes: dict[str, Any]) -> ModelShape:
    hidden, heads = _int(sizes, "hidden_size"), _int(sizes, "num_attention_heads")
    head_dim = _int(sizes, "head_dim")
    if head_dim is None and hidden and heads:
        head_dim = hidden // heads
    return ModelShape(
        num_hidden_layers=_int(sizes, "num_hidden_layers"),
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=_int(sizes, "num_key_value_heads") or heads,
        head_dim=head_dim,
        vocab_size=_int(sizes, "vocab_size"),
    )


def _context_length(sizes: dict[str, Any]) -> tuple[int | None, str | None]:
    found = [(v, k) for k in CONTEXT_LENGTH_KEYS if (v := _int(sizes, k)) is not None]
    return min(found) if found else (None, None)


def _int(sizes: dict[str, Any], key: str) -> int | None:
    value = sizes.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
