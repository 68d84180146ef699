"""Starts the real CPU engine on a model folder and prints, as JSON, the memory it gave the
weights and the KV cache's size in tokens: what the sizing estimate is checked against.

Run as a script (`python catalogue_engine_probe.py MODEL KV_CACHE_BYTES`): vLLM needs a
__main__ guard. The engine core and its worker run in this process, so the weights can be
measured on the loaded model itself.
"""

from __future__ import annotations

import json
import os
import sys


def _weights_bytes(model) -> int:
    """Bytes of the weights the engine's layers hold. On the CPU, linear layers repack their
    weight for the CPU kernels and leave an empty Parameter behind: those are counted by the
    layer's own sizes (input x output per partition, in its dtype)."""
    import torch

    total = 0
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.numel() == 0 and hasattr(module, "output_size_per_partition"):
                element = torch.empty((), dtype=module.params_dtype).element_size()
                total += (module.input_size_per_partition * module.output_size_per_partition
                          * element)
            else:
                total += param.numel() * param.element_size()
    return total


def main(model: str, kv_cache_bytes: int) -> dict:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM

    llm = LLM(model, dtype="bfloat16", max_model_len=2048, kv_cache_memory_bytes=kv_cache_bytes,
              enforce_eager=True, distributed_executor_backend="uni")
    cache = llm.llm_engine.vllm_config.cache_config
    weights = llm.apply_model(_weights_bytes)
    return {"kv_cache_tokens": cache.num_gpu_blocks * cache.block_size,
            "weights_bytes": weights[0]}


if __name__ == "__main__":
    print("PROBE " + json.dumps(main(sys.argv[1], int(sys.argv[2]))), flush=True)
