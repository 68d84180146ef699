"""An endpoint's deployment from a catalogue entry: the entry's folder, and its placement
proposal where the operator gave none (accelerators_per_replica; tensor_parallel_size on
GPUs), sized for the endpoint's context length and concurrency. Pure: no store, no engine."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from serving.catalogue.facts import read_model_facts
from serving.catalogue.model_record import CatalogueModel
from serving.catalogue.placement import catalogue_deployment, size
from serving.tenancy import Invalid
from tests.unit.catalogue_files import demo_model

GIB = 1024**3


@pytest.fixture(scope="session")
def entry(tmp_path_factory) -> CatalogueModel:
    facts = read_model_facts(demo_model(tmp_path_factory))
    return CatalogueModel.of("demo-ft", None, "v1", facts, "LlamaForCausalLM",
                             datetime(2025, 3, 14, tzinfo=UTC))


def test_the_entry_sizes_at_its_context_length_unless_told(entry):
    assert size(entry, {"cpu": 2 * GIB}).estimate.tokens == 2048 * 8
    assert size(entry, {"cpu": 2 * GIB}, 512, 3).estimate.tokens == 512 * 3
    unknown = replace(entry, context_length=None)
    assert size(unknown, {"cpu": 2 * GIB}).error == ("config.json gives no context length: "
                                                     "pass max_model_len")


def test_a_cpu_endpoint_takes_whole_slots(entry):
    placed = catalogue_deployment(entry, {"model": "catalogue:demo-ft",
                                          "engine": {"max_model_len": 1024}},
                                  "cpu", {"cpu": GIB})
    # 1,024 tokens x 8 x 512 bytes + 853,248 = 5,047,552: far below a slot's memory, but an
    # engine computes on whole cores.
    assert placed == {"model": entry.source, "catalogue": "demo-ft",
                      "accelerators_per_replica": 1.0,
                      "engine": {"max_model_len": 1024}}
    big = catalogue_deployment(replace(entry, weights_bytes=10 * GIB), {
        "model": "catalogue:demo-ft", "engine": {"max_model_len": 1024}}, "cpu", {"cpu": GIB})
    assert big["accelerators_per_replica"] == 12.0  # 10 GiB over 0.9 GiB per slot


def test_what_the_operator_gave_is_kept(entry):
    given = {"model": "catalogue:demo-ft", "accelerators_per_replica": 2,
             "engine": {"max_model_len": 1024, "tensor_parallel_size": 1}}
    placed = catalogue_deployment(entry, given, "gpu", {"gpu": 80 * GIB})
    assert placed["accelerators_per_replica"] == 2 and placed["engine"] == given["engine"]


def test_a_model_too_big_for_one_gpu_is_split_over_two(entry):
    # 100 GiB of weights: 72 GiB usable per 80 GiB GPU; 2 divides the demo's 2 heads.
    big = replace(entry, weights_bytes=100 * GIB)
    placed = catalogue_deployment(big, {"model": "catalogue:demo-ft", "engine": {
        "max_model_len": 128, "max_num_seqs": 1}}, "gpu", {"gpu": 80 * GIB})
    assert (placed["accelerators_per_replica"], placed["engine"]["tensor_parallel_size"]) == (
        2.0, 2)


@pytest.mark.parametrize("deployment, change, words", [
    ({"engine": {"max_model_len": 4096}}, {}, "context length 4096 exceeds the model's 2048"),
    ({"engine": "fast"}, {}, "deployment.engine: must be an object"),
])
def test_an_entry_that_cannot_be_placed_is_refused_saying_why(entry, deployment, change, words):
    with pytest.raises(Invalid, match=words):
        catalogue_deployment(replace(entry, **change), {"model": "catalogue:demo-ft",
                                                        **deployment}, "cpu", {"cpu": GIB})
