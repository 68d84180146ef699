"""The OpenAI-compatible gateway: authenticates, routes by `model`, streams engine output."""

from serving.gateway.app import build_gateway_app
from serving.gateway.routing import EndpointTarget, EngineCall

__all__ = ["build_gateway_app", "EndpointTarget", "EngineCall"]
