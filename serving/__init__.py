"""Answers requests: the OpenAI-compatible gateway and the hosted vLLM engines."""
