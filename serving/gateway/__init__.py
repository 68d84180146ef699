"""The OpenAI-compatible gateway: authenticates, routes by `model`, streams engine output."""

from serving.gateway.app import build_gateway_app

__all__ = ["build_gateway_app"]
