"""An endpoint's card: what the gateway knows of its engine without asking it per request.
Its model folder ("root"), context length and, where LoRA is enabled, the largest adapter
rank and how many adapters one engine step can apply ("lora")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# vLLM's defaults for --max-lora-rank and --max-loras (vllm/config/lora.py).
VLLM_MAX_LORA_RANK = 16
VLLM_MAX_LORAS = 1


def engine_card(root: str, max_model_len: int | None, max_lora_rank: int | None = None,
                max_loras: int | None = None) -> dict[str, Any]:
    lora = None if max_lora_rank is None else {"max_lora_rank": max_lora_rank,
                                               "max_loras": max_loras or VLLM_MAX_LORAS}
    return {"root": root, "max_model_len": max_model_len, "lora": lora}


def card_from_args(root: str, engine_args: Mapping[str, Any]) -> dict[str, Any]:
    """The card of an engine not running yet (an endpoint at zero), from its engine
    arguments as vLLM will read them."""
    lora = engine_args.get("enable_lora") is True
    return engine_card(
        root, engine_args.get("max_model_len"),
        int(engine_args.get("max_lora_rank", VLLM_MAX_LORA_RANK)) if lora else None,
        int(engine_args.get("max_loras", VLLM_MAX_LORAS)) if lora else None)


def max_lora_rank(card: Mapping[str, Any]) -> int | None:
    """None where the endpoint's engine does not enable LoRA."""
    lora = card.get("lora")
    return lora.get("max_lora_rank") if isinstance(lora, Mapping) else None
