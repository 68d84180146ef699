"""Real checkpoint folders for the catalogue tests: the demo model, LoRA adapters made with
peft, and broken copies. Each is made once per test session (the demo model takes seconds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

_made: dict[str, Path] = {}


def demo_model(tmp_path_factory) -> Path:
    from deployments.demo_model import write_demo_model

    return _once("model", lambda: write_demo_model(tmp_path_factory.mktemp("demo")))


def demo_adapter(tmp_path_factory, rank: int = 8) -> Path:
    from deployments.demo_adapter import write_demo_adapter

    base = demo_model(tmp_path_factory)
    return _once(f"adapter-r{rank}", lambda: write_demo_adapter(
        tmp_path_factory.mktemp(f"adapter-r{rank}"), base, rank=rank))


def other_base(tmp_path_factory) -> Path:
    """A Llama of another size (hidden 256, vocab 1024): weights and config only."""
    return _once("other-base", lambda: _write_llama(tmp_path_factory.mktemp("other"),
                                                    hidden_size=256, vocab_size=1024))


def adapter_for_other_base(tmp_path_factory) -> Path:
    from deployments.demo_adapter import write_demo_adapter

    base = other_base(tmp_path_factory)
    return _once("other-adapter", lambda: write_demo_adapter(
        tmp_path_factory.mktemp("other-adapter"), base))


def sharded_demo_model(tmp_path_factory) -> Path:
    """The demo model with its weights in two shards and an index, as large models come."""
    return _once("sharded", lambda: _shard(demo_model(tmp_path_factory),
                                           tmp_path_factory.mktemp("sharded") / "demo"))


def copy_of(folder: Path, where: Path) -> Path:
    out = where / folder.name
    shutil.copytree(folder, out)
    return out


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


def _once(key: str, make) -> Path:
    if key not in _made or not _made[key].is_dir():
        _made[key] = Path(make())
    return _made[key]


def _write_llama(out: Path, hidden_size: int, vocab_size: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2, num_attention_heads=hidden_size // 64,
                         num_key_value_heads=1, vocab_size=vocab_size,
                         max_position_embeddings=1024, torch_dtype="bfloat16")
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    return out


def _shard(source: Path, out: Path) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, out, ignore=shutil.ignore_patterns("model.safetensors"))
    tensors = load_file(source / "model.safetensors")
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for shard, part in halves.items():
        save_file({n: tensors[n] for n in part}, out / shard, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return out
