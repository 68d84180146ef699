"""Base-model tokens batched beside LoRA tokens get no adapter's delta on the CPU engine
(serving/engine/cpu_lora.py). vLLM's own PyTorch ops are run on a mixed batch: without the
plugin's wrapping, a -1 token takes the last adapter slot's delta (the first test shows the
bug is there to fix); with it, exactly zero, and adapter tokens are unchanged. End to end,
tests/e2e/test_adapters.py interleaves base and adapter requests on one engine."""

from __future__ import annotations

from importlib.metadata import entry_points

import torch

from serving.engine.cpu_lora import NO_ADAPTER_RESULT, skipping_no_lora_tokens

TOKENS, IN, RANK, OUT, SLOTS = 4, 16, 4, 8, 2
INDICES = torch.tensor([-1, 0, 1, -1])  # tokens 0 and 3 use no adapter


def _batch():
    torch.manual_seed(0)
    inputs = torch.randn(TOKENS, IN)
    lora_a = torch.randn(SLOTS, RANK, IN)
    lora_b = torch.randn(SLOTS, OUT, RANK)
    return inputs, lora_a, lora_b


def _adapter_delta(shrink, expand, indices=INDICES, buffer_fill=0.0):
    """A LoRA layer's delta as vLLM's CPU wrapper computes it: shrink into a buffer, then
    expand added onto the output."""
    inputs, lora_a, lora_b = _batch()
    buffer = torch.full((TOKENS, RANK), buffer_fill)
    shrink(inputs, lora_a, buffer, indices, 1.0)
    delta = torch.zeros(TOKENS, OUT)
    expand(buffer, lora_b, delta, indices, True)
    return delta


def _wrapped(op, name):
    return skipping_no_lora_tokens(op, NO_ADAPTER_RESULT[name])


def test_vllms_cpu_ops_apply_the_last_slot_to_base_tokens():
    from vllm.lora.ops.torch_ops import lora_ops

    shrink = getattr(lora_ops.bgmv_shrink, "__wrapped__", lora_ops.bgmv_shrink)
    expand = getattr(lora_ops.bgmv_expand, "__wrapped__", lora_ops.bgmv_expand)
    delta = _adapter_delta(shrink, expand)
    assert delta[0].abs().sum() > 0  # a base token changed: the bug the plugin masks


def test_wrapped_ops_leave_base_tokens_alone_and_adapter_tokens_as_they_were():
    from vllm.lora.ops.torch_ops import lora_ops

    shrink = getattr(lora_ops.bgmv_shrink, "__wrapped__", lora_ops.bgmv_shrink)
    expand = getattr(lora_ops.bgmv_expand, "__wrapped__", lora_ops.bgmv_expand)
    plain = _adapter_delta(shrink, expand)
    masked = _adapter_delta(_wrapped(shrink, "bgmv_shrink"), _wrapped(expand, "bgmv_expand"))
    assert torch.equal(masked[0], torch.zeros(OUT)) and torch.equal(masked[3], torch.zeros(OUT))
    assert torch.equal(masked[1:3], plain[1:3])


def test_the_expand_slice_op_adds_nothing_to_base_tokens():
    from vllm.lora.ops.torch_ops import lora_ops

    op = getattr(lora_ops.bgmv_expand_slice, "__wrapped__", lora_ops.bgmv_expand_slice)
    inputs, _, lora_b = _batch()
    output = torch.ones(TOKENS, OUT * 2)
    _wrapped(op, "bgmv_expand_slice")(inputs[:, :RANK], lora_b, output, INDICES, OUT, OUT,
                                      True)
    assert torch.equal(output[0], torch.ones(OUT * 2)) and torch.equal(output[3],
                                                                       torch.ones(OUT * 2))
    assert not torch.equal(output[1, OUT:], torch.ones(OUT))


def test_a_batch_without_adapter_tokens_computes_nothing_and_adds_nothing():
    from vllm.lora.ops.torch_ops import lora_ops

    shrink = _wrapped(getattr(lora_ops.bgmv_shrink, "__wrapped__", lora_ops.bgmv_shrink),
                      "bgmv_shrink")
    expand = _wrapped(getattr(lora_ops.bgmv_expand, "__wrapped__", lora_ops.bgmv_expand),
                      "bgmv_expand")
    none = torch.full((TOKENS,), -1)
    # The buffer starts dirty: the shrink must still leave zeros, as the op would.
    assert torch.equal(_adapter_delta(shrink, expand, none, buffer_fill=7.0),
                       torch.zeros(TOKENS, OUT))
    output = torch.ones(TOKENS, OUT * 2)
    NO_ADAPTER_RESULT["bgmv_expand_slice"](None, torch.zeros(SLOTS, OUT, RANK), output, none,
                                           OUT, OUT, False)
    assert torch.equal(output[:, :OUT], torch.ones(TOKENS, OUT))
    assert torch.equal(output[:, OUT:], torch.zeros(TOKENS, OUT))


def test_the_plugin_is_registered_for_every_vllm_process_and_wraps_the_cpu_ops():
    plugins = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert plugins["aifactory_cpu_lora"] == "serving.engine.cpu_lora:mask_no_lora_tokens"
    from vllm.plugins import load_general_plugins

    load_general_plugins()
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    for name in ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice"):
        assert getattr(lora_ops, name).skips_no_lora_tokens
        assert getattr(punica_cpu, name) is getattr(lora_ops, name)
