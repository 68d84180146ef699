"""The model architectures the installed vLLM can serve: what rules.check_model is handed."""

from __future__ import annotations


def supported_architectures() -> frozenset[str]:
    """The architecture names in vLLM's model registry (config.json's `architectures`).

    Importing vLLM takes seconds; call this once, at the edge, and pass the set down."""
    from vllm import ModelRegistry

    return frozenset(ModelRegistry.get_supported_archs())
