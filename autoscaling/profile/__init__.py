"""Measures a real vLLM engine (prefill, decode steps, KV cache, cold start by phase) into a
profile file that the simulator's engine model reads instead of its built-in figures."""

from autoscaling.profile.schema import EngineProfileFile, ProfileError, load_profile

__all__ = ["EngineProfileFile", "ProfileError", "load_profile"]
