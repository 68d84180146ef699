"""aifactory-sdk: a typed client for the AI Factory inference platform (inference, tenant
self-service, administration) with retries, typed errors and rate-limit state."""

from aifactory_sdk._client import AsyncClient, AsyncStream, Client, Stream
from aifactory_sdk._core import NOT_GIVEN, VERSION
from aifactory_sdk.errors import (
    AIFactoryError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExhaustedError,
    RateLimitError,
    UnavailableError,
)

__version__ = VERSION

__all__ = [
    "NOT_GIVEN",
    "AIFactoryError",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AsyncStream",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExhaustedError",
    "RateLimitError",
    "Stream",
    "UnavailableError",
    "__version__",
]
