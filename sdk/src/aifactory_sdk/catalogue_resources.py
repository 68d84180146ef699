"""The model catalogue (`client.admin.models`): trained checkpoints registered by name,
checked and sized by the platform, then deployed with `endpoints.create(..., deployment=
{"model": "catalogue:NAME", ...})`. A platform admin's key."""

from __future__ import annotations

from typing import Any

from aifactory_sdk._base import Resource, _segment
from aifactory_sdk._core import Call
from aifactory_sdk.types import Deleted
from aifactory_sdk.types.catalogue import CatalogueModel, CatalogueModelList


class CatalogueModels(Resource):
    def register(self, name: str, *, path: str, owner: str | None = None,
                 version: str | None = None, digest: str | None = None) -> Any:
        """`CatalogueModel` with its sizing: the folder `path` (absolute, seen by every
        node) checked first: an architecture the installed vLLM serves, every weight file
        named present, the tokenizer loading, the content digest `digest` if given. A
        refusal (BadRequestError) names each file and reason; nothing is registered then."""
        body = {"name": name, "path": path, "owner": owner, "version": version,
                "digest": digest}
        return self._send(Call("POST", "/admin/v1/models", CatalogueModel,
                               body={k: v for k, v in body.items() if v is not None}))

    def list(self, *, owner: str | None = None) -> Any:
        """`CatalogueModelList`: every entry by name, or one tenant's own."""
        return self._send(Call("GET", "/admin/v1/models", CatalogueModelList,
                               params={"owner": owner}))

    def retrieve(self, name: str, *, max_model_len: int | None = None,
                 concurrency: int | None = None) -> Any:
        """`CatalogueModel` with its sizing for `concurrency` sequences (default 8) of
        `max_model_len` tokens (default: the model's context length)."""
        return self._send(Call("GET", f"/admin/v1/models/{_segment(name)}", CatalogueModel,
                               params={"max_model_len": max_model_len,
                                       "concurrency": concurrency}))

    def delete(self, name: str) -> Any:
        """`Deleted`; the folder stays. ConflictError while an endpoint created from it
        exists."""
        return self._send(Call("DELETE", f"/admin/v1/models/{_segment(name)}", Deleted))
