"""Why a target could not take a request; the gateway answers each with 503 and Retry-After."""

from __future__ import annotations


class EndpointUnavailable(Exception):
    """An endpoint cannot take the request now (no replica woke, or none was reachable in
    time); the client should retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EndpointOverloaded(Exception):
    """An endpoint's bounded queue is full: the request is refused at once rather than held
    until its client times out."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
