"""The SDK's result types against the gateway's own OpenAPI document (the one /openapi.json
serves, built from vLLM's response models): every field an SDK type names is one the
gateway's schema declares, and every field the SDK requires the schema requires too. A
field renamed or dropped on either side fails here, not in a user's code."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aifactory_sdk import types
from fastapi.testclient import TestClient
from pydantic import BaseModel

from serving.admin import build_admin_router, build_tenant_router
from serving.batch.files.routes import build_files_router
from serving.batch.routes import build_batch_router
from serving.gateway import build_gateway_app

# SDK type -> the gateway document's schema of the same body
PAIRS = [
    (types.ChatCompletion, "ChatCompletionResponse"),
    (types.Completion, "CompletionResponse"),
    (types.EmbeddingList, "EmbeddingResponse"),
    (types.ModelList, "ModelList"),
    (types.ModelCard, "Model"),
    (types.ResponseObject, "ResponsesResponse"),
    (types.FileObject, "FileObject"),
    (types.FileList, "FileList"),
    (types.FileDeleted, "FileDeleted"),
    (types.Batch, "BatchObject"),
    (types.BatchList, "BatchList"),
    (types.OperatorBatch, "OperatorBatch"),
    (types.OperatorBatchList, "OperatorBatchList"),
    (types.SlaReport, "SlaReport"),
    (types.SlaBatch, "BatchUsage"),
    (types.Adapter, "AdapterOut"),
    (types.OperatorAdapter, "OperatorAdapterOut"),
    (types.AdapterList, "AdapterList"),
    (types.OperatorAdapterList, "OperatorAdapterList"),
    (types.AdapterDeleted, "AdapterDeleted"),
    (types.CatalogueModel, "CatalogueModelOut"),
    (types.CatalogueModelList, "CatalogueModelList"),
]


@pytest.fixture(scope="module")
def schemas() -> dict:
    """The document of a gateway with the parts the platform mounts beside the inference
    routes (files, batches, admin and self-service); no route runs, so none needs a store."""
    def batches(gateway):
        return build_batch_router(SimpleNamespace(access=SimpleNamespace(store=None)),
                                  None), None

    app = build_gateway_app({}, access=None, parts=(batches,), routers=(
        ("/admin/v1", build_admin_router(None)), ("/tenant/v1", build_tenant_router(None)),
        ("", build_files_router(None, None))))
    document = TestClient(app).get("/openapi.json").json()
    return document["components"]["schemas"]


def resolved(schema: dict, schemas: dict) -> dict:
    ref = schema.get("$ref")
    return schemas[ref.rsplit("/", 1)[1]] if ref else schema


def nested(annotation) -> type[BaseModel] | None:
    """The model a field holds (itself, or the item of a list of them), if any."""
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def mismatches(sdk_type: type[BaseModel], schema: dict, schemas: dict, where: str) -> list:
    schema = resolved(schema, schemas)
    declared = schema.get("properties", {})
    required = set(schema.get("required", []))
    found = []
    for name, field in sdk_type.model_fields.items():
        if name not in declared:
            found.append(f"{where}.{name}: not in the gateway's schema")
            continue
        if field.is_required() and name not in required:
            found.append(f"{where}.{name}: the SDK requires it, the gateway may omit it")
        inner = nested(field.annotation)
        if inner is not None:
            target = resolved(declared[name], schemas)
            target = resolved(target.get("items", target), schemas)
            for option in target.get("anyOf", [target]):
                if resolved(option, schemas).get("type") == "object":
                    found += mismatches(inner, option, schemas, f"{where}.{name}")
                    break
    return found


@pytest.mark.parametrize(("sdk_type", "schema_name"), PAIRS,
                         ids=[sdk.__name__ for sdk, _ in PAIRS])
def test_the_sdks_types_are_the_gateways(schemas, sdk_type, schema_name):
    assert mismatches(sdk_type, schemas[schema_name], schemas, sdk_type.__name__) == []
