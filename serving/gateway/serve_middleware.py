"""Starlette middleware Ray Serve wraps around the gateway's HTTP server, outside its own
(`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`, set for every Ray process by `ray_env`).

Serve's own RequestIdMiddleware appends an `x-request-id` to every response, its id of the
request (the client's `x-request-id`, or one it makes up). The gateway's responses already
carry the platform's id there, which keys the ledger; the header must appear once, so the
first one (the gateway's) is kept and Serve's copy dropped. Responses Serve makes itself (a
404 for a route no application has) keep Serve's, the only one they have."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_REQUEST_ID = b"x-request-id"


def first_request_id_only(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    kept, seen = [], False
    for name, value in headers:
        if name.lower() == _REQUEST_ID:
            if seen:
                continue
            seen = True
        kept.append((name, value))
    return kept


class OneRequestIdHeader:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_once(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = first_request_id_only(list(message.get("headers", ())))
            await send(message)

        await self.app(scope, receive, send_once)


def serve_http_middlewares() -> list[Middleware]:
    return [Middleware(OneRequestIdHeader)]
