"""Validate bodies against OpenAI's published schemas (pinned in openai_schemas.json; see
pin_spec.py). OpenAPI 3.1 schemas are JSON Schema 2020-12, except that the document still
marks some fields `nullable: true` the 3.0 way: such a field may be null, as OpenAI's own
SDKs read it."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

PINNED = Path(__file__).with_name("openai_schemas.json")
BASE = "https://aifactory.invalid/openai-openapi.json"


def _nullable_as_null(value):
    """`{"type": "object", "nullable": true, ...}` -> `{"anyOf": [{...}, {"type": "null"}]}`."""
    if isinstance(value, list):
        return [_nullable_as_null(v) for v in value]
    if not isinstance(value, dict):
        return value
    value = {k: _nullable_as_null(v) for k, v in value.items()}
    if value.pop("nullable", False) is True:
        return {"anyOf": [value, {"type": "null"}]}
    return value


@cache
def document() -> dict:
    pinned = json.loads(PINNED.read_text())
    return {**pinned, "components": _nullable_as_null(pinned["components"])}


@cache
def validator(schema_name: str) -> Draft202012Validator:
    spec = document()
    registry = Registry().with_resource(BASE, Resource(contents=spec, specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"{BASE}#/components/schemas/{schema_name}"},
                                registry=registry)


def _streamed_finish_reason(error) -> bool:
    path = list(error.absolute_path)
    return (len(path) == 3 and path[0] == "choices" and path[2] == "finish_reason"
            and error.instance is None)


def violations(schema_name: str, body: object, *, streamed: bool = False) -> list[str]:
    """Each place `body` breaks the schema: "path: message"; empty when it conforms.
    `streamed`: a completion stream's chunk, validated against CreateCompletionResponse (the
    spec's one schema for both) but for `finish_reason`, null until the last chunk as
    OpenAI's own API streams it (the schema says string: the one place it disagrees with
    the API it describes)."""
    errors = validator(schema_name).iter_errors(copy.deepcopy(body))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {_detail(e)}"
            for e in sorted(errors, key=lambda e: list(map(str, e.absolute_path)))
            if not (streamed and _streamed_finish_reason(e))]


def _detail(error) -> str:
    """The message of the deepest alternative for anyOf errors ("is not valid under any of
    the given schemas" says nothing)."""
    while error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return f"{'/'.join(map(str, error.absolute_path))}: {error.message[:300]}"


def pinned_commit() -> str:
    return document()["commit"]
