"""OpenAI-shaped error bodies: `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import json
from http import HTTPStatus

from fastapi.responses import JSONResponse

# OpenAI's `type` for each status the gateway answers with.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    501: "invalid_request_error",
    503: "service_unavailable_error",
}


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict:
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(status, message, param=param, code=code), status, headers=headers)


def from_engine_error(body: dict) -> tuple[int, dict]:
    """Re-shape vLLM's error body (its `code` is the HTTP status) into OpenAI's."""
    err = body.get("error") if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {}
    status = err.get("code") if isinstance(err.get("code"), int) else HTTPStatus.BAD_REQUEST
    if status < 400 or status > 599:
        status = HTTPStatus.INTERNAL_SERVER_ERROR
    param = err.get("param")
    return status, error_body(status, str(err.get("message", "engine error")),
                              param=param if isinstance(param, str) else None)


def sse_error_event(status: int, message: str) -> str:
    """An error event for a stream that already started: the openai client raises on it."""
    return f"data: {json.dumps(error_body(status, message))}\n\n"
