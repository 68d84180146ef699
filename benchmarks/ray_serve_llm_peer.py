"""Serves a model with Ray Serve LLM (`ray.serve.llm.build_openai_app`), the peer measured by
overhead.py. Run as a script: `python benchmarks/ray_serve_llm_peer.py MODEL_DIR PORT`."""

from __future__ import annotations

import sys
import time

if __name__ == "__main__":
    import ray
    from ray import serve
    from ray.serve.llm import LLMConfig, build_openai_app

    model, port = sys.argv[1], int(sys.argv[2])
    ray.init(num_cpus=8, include_dashboard=False, logging_level="ERROR")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = LLMConfig(
        model_loading_config={"model_id": "demo", "model_source": model},
        accelerator_config={"kind": "cpu"},
        placement_group_config={"bundles": [{"CPU": 1}]},
        deployment_config={"num_replicas": 1, "max_ongoing_requests": 256},
        engine_kwargs={"max_model_len": 2048, "dtype": "bfloat16",
                       "kv_cache_memory_bytes": 256 * 1024**2},
    )
    serve.run(build_openai_app({"llm_configs": [config]}), blocking=False)
    print("READY", flush=True)
    while True:
        time.sleep(3600)
