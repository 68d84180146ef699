"""The admin API's one error mapping: tenancy errors, bad requests and a lost database become
OpenAI-shaped responses, in the route class every admin route uses."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.gateway.errors import error_response
from serving.tenancy import Conflict, Forbidden, Invalid, NotFound, TenancyError, Unauthenticated

logger = logging.getLogger(__name__)

# Admin bodies are a few fields; anything near this size is a mistake or an attack.
MAX_BODY_BYTES = 64 * 1024

# (status, code) per tenancy error; the first match wins, so subclasses come first.
_TENANCY_STATUS: tuple[tuple[type[TenancyError], int, str | None], ...] = (
    (Unauthenticated, 401, "invalid_api_key"),
    (Forbidden, 403, "insufficient_permissions"),
    (Invalid, 400, "invalid_value"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (TenancyError, 400, None),
)


class BodyTooLarge(HTTPException):
    """The request body passed MAX_BODY_BYTES. An HTTPException, because FastAPI re-raises
    those from body parsing and turns any other error there into a bare 400."""

    def __init__(self) -> None:
        super().__init__(413, f"request body is larger than {MAX_BODY_BYTES} bytes")


def tenancy_error_response(exc: TenancyError, key_hint: str = "an admin key") -> JSONResponse:
    status, code = next((status, code) for kind, status, code in _TENANCY_STATUS
                        if isinstance(exc, kind))
    if isinstance(exc, Unauthenticated):
        return error_response(401, f"{exc}: pass {key_hint} as 'Authorization: Bearer ...'",
                              code=code, headers={"WWW-Authenticate": "Bearer"})
    return error_response(status, str(exc), param=getattr(exc, "field", None), code=code)


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    """400 naming each bad field, e.g. "body.priority: Input should be 'critical', ..."."""
    errors = exc.errors()
    if errors and errors[0].get("type") == "json_invalid":
        reason = (errors[0].get("ctx") or {}).get("error", "malformed")
        return error_response(400, f"request body is not valid JSON: {reason}")
    if errors and tuple(errors[0].get("loc", ())) == ("body",) and errors[0].get("type") in (
            "model_attributes_type", "dict_type"):
        return error_response(400, "request body must be a JSON object sent as "
                                   "Content-Type: application/json")
    parts, params = [], []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ()))
        params.append(".".join(str(part) for part in error.get("loc", ())[1:]) or None)
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return error_response(400, "; ".join(parts) or "invalid request",
                          param=params[0] if params else None)


class _SizeLimitedRequest(Request):
    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                raise BodyTooLarge
            chunks, size = [], 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise BodyTooLarge
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body


class AdminRoute(APIRoute):
    """Runs the route with a size-limited body and turns every expected failure into an
    OpenAI-shaped error. A route class, not app exception handlers, so the router brings its
    error shape to whichever app mounts it."""

    key_hint = "an admin key"  # what a 401 tells the caller to send instead

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handle = super().get_route_handler()

        async def handle_mapping_errors(request: Request) -> Response:
            try:
                return await handle(_SizeLimitedRequest(request.scope, request.receive))
            except TenancyError as exc:
                return tenancy_error_response(exc, self.key_hint)
            except RequestValidationError as exc:
                return validation_error_response(exc)
            except StarletteHTTPException as exc:  # FastAPI's own body errors raise the base
                return error_response(exc.status_code, str(exc.detail), headers=exc.headers)
            except OperationalError as exc:
                logger.warning("tenancy database unavailable: %s", exc)
                return error_response(503, "the tenancy database is unavailable; retry shortly")
            except Exception:
                logger.exception("admin request %s %s failed", request.method, request.url.path)
                return error_response(500, "the admin API failed; the server log has details")

        return handle_mapping_errors
