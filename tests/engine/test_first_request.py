"""A real engine's first request may be a prompt of two tokens. On a CPU with AMX, vLLM's
own kernels then ran before anything had asked Linux for the AMX tile state, and the engine
worker died of SIGILL; the platform's vLLM plugin asks first (serving/engine/cpu_amx.py)."""

from __future__ import annotations

import asyncio
from importlib.metadata import entry_points

from serving.engine.host import EngineHost

# The model runs in the engine core's process (vLLM loads its plugins there too); a worker
# process of its own, as on the platform, waited forever here after the other packages ran.
ENGINE_ARGS = {"max_model_len": 512, "dtype": "bfloat16", "kv_cache_memory_bytes": 134217728,
               "enforce_eager": True, "distributed_executor_backend": "uni"}


def test_the_plugin_is_registered_for_every_vllm_process():
    plugins = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert plugins["aifactory_amx"] == "serving.engine.cpu_amx:request_amx_permission"


async def test_an_engines_first_request_may_be_two_tokens(tmp_path):
    import ray

    from deployments.demo_model import write_demo_model

    # A test package before this one may have left this process connected to a Ray cluster
    # (now gone): vLLM would look there and wait.
    if ray.is_initialized():
        ray.shutdown()
    host = await asyncio.wait_for(
        EngineHost.start(str(write_demo_model(tmp_path / "demo")), "demo", ENGINE_ARGS), 300)
    try:
        reply = await asyncio.wait_for(host.handle(
            "completion", {"model": "demo", "prompt": "hi", "max_tokens": 3, "ignore_eos": True}),
            120)
        assert reply.status == 200, reply.body
        assert reply.body["usage"] == {**reply.body["usage"], "prompt_tokens": 2,
                                       "completion_tokens": 3}
    finally:
        host.shutdown()
