"""A vLLM general plugin (entry point group `vllm.general_plugins`), which vLLM runs in each
of its processes, engine workers included: on a CPU with AMX, it asks Linux for the AMX tile
state before any kernel uses it.

Linux gives a process the AMX tile registers only once it asks (arch_prctl
ARCH_REQ_XCOMP_PERM); an AMX instruction before that is an illegal instruction. oneDNN asks
when it first uses AMX, but vLLM's own CPU kernels (its small-GEMM and AMX attention kernels)
do not. Here an engine whose first request was a prompt of two tokens reached those first,
and its worker died of SIGILL (exit code -4)."""

from __future__ import annotations


def request_amx_permission() -> None:
    import torch

    # torch.cpu._init_amx is the request PyTorch's own compiler makes before AMX code runs.
    if torch.cpu._is_amx_tile_supported() and not torch.cpu._init_amx():
        raise RuntimeError("this CPU has AMX but Linux refused its tile state to the engine")
