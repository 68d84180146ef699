"""Writes the demo adapter: a small LoRA adapter for the demo model, made locally with peft.

Its weights are random (peft's init_lora_weights=False), so its output differs from the base
model's; peft's default init makes B zero, an adapter that changes nothing. Seeded: the same
base and seed give the same adapter weights.
"""

from __future__ import annotations

import os
from pathlib import Path

# What ENVIRONMENT.md saw served by vLLM's CPU engine with max_lora_rank=8.
DEMO_ADAPTER_RANK = 8
DEMO_ADAPTER_TARGETS = ("q_proj", "v_proj")


def write_demo_adapter(path: str | os.PathLike, base: str | os.PathLike, seed: int = 0,
                       rank: int = DEMO_ADAPTER_RANK) -> Path:
    """Write a LoRA adapter for the model folder `base` into `path` and return it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.bfloat16)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(DEMO_ADAPTER_TARGETS),
                        init_lora_weights=False)
    torch.manual_seed(seed)  # the adapter's weights are drawn here
    get_peft_model(model, config).save_pretrained(str(out), safe_serialization=True)
    return out
