"""Cut the schemas the conformance tests use out of OpenAI's published OpenAPI document
(github.com/openai/openai-openapi, `openapi.json`) into `openai_schemas.json`, with every
schema they reference: the whole document is 3.4 MB, the part that describes chat,
completions, embeddings, models, files and errors far less.

    python -m tests.conformance.pin_spec /path/to/openapi.json COMMIT

The pinned commit and the spec's version are kept in the file; the tests say which."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOTS = ("CreateChatCompletionResponse", "CreateChatCompletionStreamResponse",
         "CreateCompletionResponse", "CreateEmbeddingResponse", "ListModelsResponse", "Model",
         "ErrorResponse", "Response", "ResponseStreamEvent", "OpenAIFile", "ListFilesResponse",
         "DeleteFileResponse")
PINNED = Path(__file__).with_name("openai_schemas.json")
PREFIX = "#/components/schemas/"


def references(value) -> set[str]:
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith(PREFIX):
                found.add(ref[len(PREFIX):])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def subset(document: dict, roots: tuple[str, ...] = ROOTS) -> dict:
    schemas = document["components"]["schemas"]
    kept: dict = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in kept:
            continue
        kept[name] = schemas[name]
        todo.extend(references(schemas[name]) - kept.keys())
    return dict(sorted(kept.items()))


def main(path: str, commit: str) -> None:
    document = json.loads(Path(path).read_text())
    PINNED.write_text(json.dumps({
        "source": "https://github.com/openai/openai-openapi/blob/"
                  f"{commit}/openapi.json",
        "commit": commit, "version": document["info"]["version"],
        "components": {"schemas": subset(document)}}, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
