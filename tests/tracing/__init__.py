"""Traces end to end through a real gateway app and a real vLLM engine in this process."""
