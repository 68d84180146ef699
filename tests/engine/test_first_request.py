"""A real engine's first request may be a prompt of two tokens. On a CPU with AMX, vLLM's
own kernels then ran before anything had asked Linux for the AMX tile state, and the engine
worker died of SIGILL; the platform's vLLM plugin asks first (serving/engine/cpu_amx.py).

End to end, test_admin's first request (a two-token prompt to a new platform's engines) is
that case: without the plugin, both engines died there on this machine."""

from __future__ import annotations

from importlib.metadata import entry_points


def test_the_plugin_is_registered_for_every_vllm_process():
    plugins = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert plugins["aifactory_amx"] == "serving.engine.cpu_amx:request_amx_permission"


def test_the_plugin_leaves_a_process_able_to_use_amx_kernels():
    import torch

    from serving.engine.cpu_amx import request_amx_permission

    request_amx_permission()  # raises if Linux refuses the tile state on an AMX CPU
    weight = torch.randn(32, 64).bfloat16()
    assert torch.nn.functional.linear(torch.randn(2, 64).bfloat16(), weight).shape == (2, 32)
