"""Engine hosting: one vLLM AsyncLLM with vLLM's own OpenAI serving layer."""

from serving.engine.host import EngineHost, EngineReply, vllm_cli_args

__all__ = ["EngineHost", "EngineReply", "vllm_cli_args"]
