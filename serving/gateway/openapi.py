"""The gateway's OpenAPI document (FastAPI's /openapi.json), with what FastAPI cannot see.

The /v1 routes read their bodies themselves (bounded, then handed to the engine, which
validates them with vLLM's protocol models), so FastAPI finds no request body to describe.
This adds them to the generated document: the request bodies are the JSON schemas of vLLM's
own request models (ChatCompletionRequest, ..., RerankRequest: what the engines accept),
narrowed to what the gateway adds (`model` required, unknown fields refused), the 200 bodies those of vLLM's
response models, and the errors OpenAI's error shape. Parsing is unchanged; vLLM is imported
only when the document is first asked for."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

REF = "#/components/schemas/{model}"

ERROR_SCHEMA = {
    "title": "ErrorResponse",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {
            "message": {"type": "string"},
            "type": {"type": "string"},
            "param": {"type": ["string", "null"]},
            "code": {"type": ["string", "integer", "null"]},
        },
    }},
}

RETRY_AFTER = {"retry-after": {"description": "seconds to wait before retrying",
                               "schema": {"type": "string"}}}

# What the gateway answers besides 200, and why.
ERRORS = {
    "400": ("invalid request: not JSON, too deeply nested, or refused by the engine", None),
    "401": ("missing or unknown API key", None),
    "403": ("the key's tenant is deactivated", None),
    "404": ("no such model, or not one the key's tenant may use", None),
    "413": ("the request body is larger than the gateway takes", None),
    "429": ("a quota of the tenant or of its endpoint is exhausted", RETRY_AFTER),
    "503": ("the endpoint is overloaded or unavailable, or the tenancy store is", RETRY_AFTER),
}

MODELS_LIST = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": {
            "type": "object", "required": ["id", "object", "created", "owned_by"],
            "properties": {"id": {"type": "string"}, "object": {"const": "model"},
                           "created": {"type": "integer"}, "owned_by": {"type": "string"},
                           "root": {"type": "string", "description": "the endpoint's name"},
                           "max_model_len": {"type": "integer",
                                             "description": "the engine's context length"}},
        }},
    },
}

MODEL = MODELS_LIST["properties"]["data"]["items"]

# vLLM's forms of a /score body: queries and documents (or items), text_1 and text_2, data_1
# and data_2.
SCORE_REQUESTS = ("ScoreQueriesDocumentsRequest", "ScoreQueriesItemsRequest",
                  "ScoreTextRequest", "ScoreDataRequest")

# (path, request models (one of), response model)
INFERENCE_ROUTES = (
    ("/v1/chat/completions", ("ChatCompletionRequest",), "ChatCompletionResponse"),
    ("/v1/completions", ("CompletionRequest",), "CompletionResponse"),
    ("/v1/responses", ("ResponsesRequest",), "ResponsesResponse"),
    ("/v1/embeddings", ("EmbeddingCompletionRequest", "EmbeddingChatRequest"),
     "EmbeddingResponse"),
    ("/tokenize", ("TokenizeCompletionRequest", "TokenizeChatRequest"), "TokenizeResponse"),
    ("/detokenize", ("DetokenizeRequest",), "DetokenizeResponse"),
    ("/pooling", ("PoolingCompletionRequest", "PoolingChatRequest"), "PoolingResponse"),
    *((path, SCORE_REQUESTS, "ScoreResponse") for path in ("/score", "/v1/score")),
    *((path, ("RerankRequest",), "RerankResponse")
      for path in ("/rerank", "/v1/rerank", "/v2/rerank")),
)


def vllm_schemas() -> dict[str, Any]:
    """JSON schemas of vLLM's request and response models for the routes above, keyed by
    model name, with references into #/components/schemas."""
    from pydantic.json_schema import models_json_schema
    from vllm.entrypoints.openai.chat_completion.protocol import (
        ChatCompletionRequest,
        ChatCompletionResponse,
    )
    from vllm.entrypoints.openai.completion.protocol import (
        CompletionRequest,
        CompletionResponse,
    )
    from vllm.entrypoints.openai.responses.protocol import (
        ResponsesRequest,
        ResponsesResponse,
    )
    from vllm.entrypoints.pooling.embed.protocol import (
        EmbeddingChatRequest,
        EmbeddingCompletionRequest,
        EmbeddingResponse,
    )
    from vllm.entrypoints.pooling.pooling.protocol import (
        PoolingChatRequest,
        PoolingCompletionRequest,
        PoolingResponse,
    )
    from vllm.entrypoints.pooling.scoring.protocol import (
        RerankRequest,
        RerankResponse,
        ScoreDataRequest,
        ScoreQueriesDocumentsRequest,
        ScoreQueriesItemsRequest,
        ScoreResponse,
        ScoreTextRequest,
    )
    from vllm.entrypoints.serve.tokenize.protocol import (
        DetokenizeRequest,
        DetokenizeResponse,
        TokenizeChatRequest,
        TokenizeCompletionRequest,
        TokenizeResponse,
    )

    requests = (ChatCompletionRequest, CompletionRequest, ResponsesRequest,
                EmbeddingCompletionRequest, EmbeddingChatRequest, TokenizeCompletionRequest,
                TokenizeChatRequest, DetokenizeRequest, PoolingCompletionRequest,
                PoolingChatRequest, ScoreQueriesDocumentsRequest, ScoreQueriesItemsRequest,
                ScoreTextRequest, ScoreDataRequest, RerankRequest)
    responses = (ChatCompletionResponse, CompletionResponse, ResponsesResponse,
                 EmbeddingResponse, TokenizeResponse, DetokenizeResponse, PoolingResponse,
                 ScoreResponse, RerankResponse)
    _, schema = models_json_schema(
        [*((m, "validation") for m in requests), *((m, "serialization") for m in responses)],
        ref_template=REF)
    defs = schema["$defs"]
    for model in _models_within(responses):
        for name in (model.__name__, f"{model.__name__}-Output"):
            if name in defs:
                defs[name]["required"] = always_present(model, defs[name])
    return defs


def always_present(model: type, schema: dict[str, Any]) -> list[str]:
    """A response model's fields that every body has: required ones, and those whose default
    is neither null nor empty (vLLM writes such fields; the gateway drops only nulls, and
    vLLM's own serializers drop some empty lists, e.g. a message's `tool_calls`). JSON
    Schema's serialization mode leaves a field with a default optional, which would promise
    clients less than the gateway sends."""
    fields = model.model_fields
    present = {alias for name, field in fields.items()
               if field.is_required() or field.get_default(call_default_factory=True)
               not in (None, [], {})
               for alias in [field.serialization_alias or field.alias or name]}
    return sorted(present & set(schema.get("properties", {})))


def _models_within(roots) -> list[type]:
    """The pydantic models `roots` are made of, roots included."""
    from pydantic import BaseModel

    seen: list[type] = []
    todo = list(roots)
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            stack = [field.annotation]
            while stack:
                kind = stack.pop()
                if isinstance(kind, type) and issubclass(kind, BaseModel):
                    todo.append(kind)
                stack.extend(getattr(kind, "__args__", ()))
    return seen


def _errors(statuses: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for status in statuses:
        description, headers = ERRORS[status]
        response: dict[str, Any] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}},
        }
        if headers:
            response["headers"] = headers
        out[status] = response
    return out


def with_openai_bodies(document: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """`document` (FastAPI's) with the /v1 routes' bodies and responses described by
    `schemas` (as `vllm_schemas` gives them). Pure: returns a new document."""
    document = copy.deepcopy(document)
    components = document.setdefault("components", {})
    defs = components.setdefault("schemas", {})
    defs.update(copy.deepcopy(schemas))
    defs["ErrorResponse"] = ERROR_SCHEMA
    defs["ModelList"] = MODELS_LIST
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer", "description": "an inference API key (afk_...)"}
    security = [{"bearer": []}]
    paths = document.setdefault("paths", {})
    for path, requests, response in INFERENCE_ROUTES:
        for request in requests:
            body = defs[request]
            # The gateway routes by `model` (vLLM's own server defaults it) and, like OpenAI,
            # refuses fields it does not know.
            body["properties"]["model"] = {
                "type": "string", "minLength": 1,
                "description": "the endpoint to call: one the key's tenant may use"}
            body["required"] = sorted({*body.get("required", []), "model"})
            body["additionalProperties"] = False
        refs = [{"$ref": REF.format(model=request)} for request in requests]
        operation = paths.setdefault(path, {}).setdefault("post", {})
        operation["security"] = security
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {
                "schema": refs[0] if len(refs) == 1 else {"oneOf": refs}}},
        }
        operation["responses"] = {
            "200": {
                "description": "the completion, or with `stream: true` its server-sent events",
                "content": {
                    "application/json": {"schema": {"$ref": REF.format(model=response)}},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            },
            **_errors(("400", "401", "403", "404", "413", "429", "503")),
        }
    models = paths.setdefault("/v1/models", {}).setdefault("get", {})
    models["security"] = security
    models["responses"] = {
        "200": {"description": "the models the key's tenant may use",
                "content": {"application/json": {"schema": {"$ref": REF.format(model="ModelList")}}}},
        **_errors(("401", "403", "503")),
    }
    defs["Model"] = MODEL
    one = paths.setdefault("/v1/models/{model}", {}).setdefault("get", {})
    one["security"] = security
    one["responses"] = {
        "200": {"description": "one of the models the key's tenant may use",
                "content": {"application/json": {"schema": {"$ref": REF.format(model="Model")}}}},
        **_errors(("401", "403", "404", "503")),
    }
    stored = paths.setdefault("/v1/responses/{response_id}", {})
    for method, description, schema in (
            ("get", "a response the key's tenant stored", REF.format(model="ResponsesResponse")),
            ("delete", "the response is deleted", None)):
        operation = stored.setdefault(method, {})
        operation["security"] = security
        content = ({"application/json": {"schema": {"$ref": schema}}} if schema else
                   {"application/json": {"schema": {"type": "object", "required": [
                       "id", "object", "deleted"]}}})
        operation["responses"] = {"200": {"description": description, "content": content},
                                  **_errors(("401", "403", "404", "503"))}
    return document


def publish_openai_schema(app: FastAPI) -> None:
    """Make `app` serve the completed document at its openapi_url (built on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            generated = get_openapi(title=app.title, version=app.version, routes=app.routes)
            app.openapi_schema = with_openai_bodies(generated, vllm_schemas())
        return app.openapi_schema

    app.openapi = openapi
