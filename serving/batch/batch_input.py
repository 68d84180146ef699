"""A batch's input file, checked line by line before any token is spent (OpenAI's request
input format: `{"custom_id", "method": "POST", "url", "body"}` per line). A pure function of
the file's text, the batch's endpoint and the models its tenant may call: every problem found
is a `LineError` (OpenAI's BatchError: code, message, param, line), and a batch with any
fails in `validating`."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

# OpenAI's limits for one batch: 50,000 requests; a custom_id is the caller's key of a line.
MAX_LINES = 50_000
MAX_CUSTOM_ID_CHARS = 512
# More than this many problems are not listed one by one (OpenAI lists a sample too).
MAX_ERRORS_LISTED = 100
# The endpoints a batch may target and the gateway kind each is.
BATCH_ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completion",
                   "/v1/embeddings": "embedding", "/v1/responses": "responses"}


@dataclass(frozen=True)
class LineError:
    code: str
    message: str
    line: int | None = None  # 1-based, as OpenAI numbers them
    param: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param,
                "line": self.line}


@dataclass(frozen=True)
class BatchLine:
    line: int
    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class CheckedInput:
    lines: tuple[BatchLine, ...]
    errors: tuple[LineError, ...]
    errors_found: int  # all of them, when more than MAX_ERRORS_LISTED are listed


def check_input(text: str, endpoint: str, callable_models: Collection[str],
                body_problem: Callable[[dict[str, Any]], tuple[str, str | None] | None],
                ) -> CheckedInput:
    """The input's lines, or what is wrong with them. `body_problem` is the gateway's own
    check of a request body (message, param), so a line is refused for what a request would
    be; `callable_models` are the endpoints the batch's tenant may call."""
    errors: list[LineError] = []
    lines: list[BatchLine] = []
    seen: set[str] = set()
    rows = text.splitlines()
    while rows and not rows[-1].strip():
        rows.pop()
    if not rows:
        errors.append(LineError("empty_file", "the input file has no requests"))
    if len(rows) > MAX_LINES:
        errors.append(LineError("too_many_requests",
                                f"at most {MAX_LINES} requests per batch, got {len(rows)}"))
        rows = rows[:MAX_LINES]
    for number, row in enumerate(rows, start=1):
        problem = _line_problem(row, number, endpoint, callable_models, body_problem, seen)
        if isinstance(problem, LineError):
            errors.append(problem)
        else:
            lines.append(problem)
    return CheckedInput(tuple(lines) if not errors else (), tuple(errors[:MAX_ERRORS_LISTED]),
                        len(errors))


def _line_problem(row: str, number: int, endpoint: str, callable_models: Collection[str],
                  body_problem: Callable[[dict[str, Any]], tuple[str, str | None] | None],
                  seen: set[str]) -> BatchLine | LineError:
    try:
        item = json.loads(row)
    except (ValueError, RecursionError):
        return LineError("invalid_json_line", "this line is not valid JSON", number)
    if not isinstance(item, dict):
        return LineError("invalid_request", "each line must be a JSON object", number)
    unknown = sorted(set(item) - {"custom_id", "method", "url", "body"})
    if unknown:
        return LineError("invalid_request", f"unknown field {unknown[0]!r}", number, unknown[0])
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID_CHARS:
        return LineError("invalid_custom_id", f"custom_id must be a string of 1 to "
                                              f"{MAX_CUSTOM_ID_CHARS} characters", number,
                         "custom_id")
    if custom_id in seen:
        return LineError("duplicate_custom_id",
                         f"custom_id {custom_id[:64]!r} appears on an earlier line", number,
                         "custom_id")
    seen.add(custom_id)
    if item.get("method") != "POST":
        return LineError("invalid_method", "method must be POST", number, "method")
    if item.get("url") != endpoint:
        return LineError("mismatched_url", f"url must be the batch's endpoint {endpoint}",
                         number, "url")
    body = item.get("body")
    if not isinstance(body, dict):
        return LineError("invalid_request", "body must be a JSON object", number, "body")
    if body.get("stream") not in (None, False):
        return LineError("invalid_request", "a batch request cannot stream", number,
                         "body.stream")
    model = body.get("model")
    if not isinstance(model, str) or model not in callable_models:
        shown = model[:64] if isinstance(model, str) else model
        return LineError("model_not_found", f"the model {shown!r} does not exist or you do "
                                            "not have access to it", number, "body.model")
    problem = body_problem(body)
    if problem is not None:
        message, param = problem
        return LineError("invalid_request", message, number,
                         None if param is None else f"body.{param}")
    return BatchLine(number, custom_id, body)
