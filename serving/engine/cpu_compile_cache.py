"""A vLLM general plugin (entry point group `vllm.general_plugins`, run in each vLLM process):
on the CPU, an engine's second start loads its compiled model from vLLM's compile cache
instead of compiling it again.

vLLM 0.32 saves each compiled model (torch AOT compile) under ~/.cache/vllm and, on the next
start with the same model and arguments, loads it and calls `finalize_loading` on the loaded
artifact. On the CPU the artifact is a plain function without that method, so every load
failed ("Compiling model again due to a load failure ... 'function' object has no attribute
'finalize_loading'") and every start compiled again: 20-50 s of a cold start here. A plain
function needs no finalising; it is given a method that does nothing.
"""

from __future__ import annotations

import functools


def load_cpu_compiled_models() -> None:
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    import torch

    original = torch.compiler.load_compiled_function
    if getattr(original, "finalizes_plain_functions", False):
        return  # this process patched it already

    @functools.wraps(original)
    def load(*args, **kwargs):
        loaded = original(*args, **kwargs)
        artifacts = getattr(loaded, "_artifacts", None)
        compiled = getattr(artifacts, "compiled_fn", None)
        if callable(compiled) and not hasattr(compiled, "finalize_loading"):
            compiled.finalize_loading = _nothing_to_finalize
        return loaded

    load.finalizes_plain_functions = True
    torch.compiler.load_compiled_function = load


def _nothing_to_finalize(vllm_config) -> None:
    return None
