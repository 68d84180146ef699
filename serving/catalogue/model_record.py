"""A registered model as the catalogue keeps it: the facts read at registration, enough to
size a replica later without reading the folder again (its digest is a full read)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from serving.catalogue.facts import ModelFacts, ModelShape, WeightsFacts

CATALOGUE_PREFIX = "catalogue:"  # an endpoint's `model` naming a catalogue entry


@dataclass(frozen=True)
class CatalogueModel:
    name: str
    owner: str | None  # None: platform-wide
    source: str  # the folder, absolute, as every node sees it (a shared filesystem)
    version: str | None
    digest: str
    architecture: str
    parameter_count: int
    dtype: str | None
    context_length: int | None
    has_tokenizer: bool
    has_chat_template: bool
    weights_bytes: int
    shape: ModelShape
    created_at: datetime

    @classmethod
    def of(cls, name: str, owner: str | None, version: str | None, facts: ModelFacts,
           architecture: str, created_at: datetime) -> CatalogueModel:
        return cls(name=name, owner=owner, source=facts.path, version=version,
                   digest=facts.digest, architecture=architecture,
                   parameter_count=facts.weights.parameter_count,
                   dtype=facts.config_dtype or facts.weights.dtype,
                   context_length=facts.context_length, has_tokenizer=facts.has_tokenizer,
                   has_chat_template=facts.has_chat_template,
                   weights_bytes=facts.weights.total_bytes, shape=facts.shape,
                   created_at=created_at)

    def shape_json(self) -> dict[str, Any]:
        return asdict(self.shape)

    def as_facts(self) -> ModelFacts:
        """The facts sizing.py reads, as registered: no files, no problems."""
        weights = WeightsFacts(index_file=None, files_named=(), files_read=(),
                               parameter_count=self.parameter_count,
                               total_bytes=self.weights_bytes, dtype=self.dtype)
        return ModelFacts(path=self.source, files=(), architectures=(self.architecture,),
                          model_type=None, config_dtype=self.dtype, shape=self.shape,
                          context_length=self.context_length, context_length_key=(
                              None if self.context_length is None else "context_length"),
                          weights=weights, tokenizer_files=(), has_tokenizer=self.has_tokenizer,
                          has_chat_template=self.has_chat_template, digest=self.digest,
                          problems=())


def shape_of(data: dict[str, Any] | None) -> ModelShape:
    fields = ModelShape.__dataclass_fields__
    return ModelShape(**{k: (data or {}).get(k) for k in fields})
