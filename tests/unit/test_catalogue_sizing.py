"""What a replica needs (weights + KV cache) and where it fits, worked out from the facts.
The same estimate is checked against the real CPU engine in
tests/engine/test_catalogue_sizing_engine.py."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from serving.catalogue.facts import read_model_facts
from serving.catalogue.sizing import (
    MemoryEstimate,
    SizingError,
    estimate_memory,
    kv_bytes_per_token,
    propose_replicas,
)
from tests.unit.catalogue_files import copy_of, demo_model

GIB = 1024**3


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    return read_model_facts(demo_model(tmp_path_factory))


def shaped(facts, layers, kv_heads, head_dim, dtype="bfloat16"):
    shape = replace(facts.shape, num_hidden_layers=layers, num_key_value_heads=kv_heads,
                    head_dim=head_dim)
    return replace(facts, shape=shape, config_dtype=dtype)


@pytest.mark.parametrize("layers, kv_heads, head_dim, dtype, expected", [
    (2, 1, 64, "bfloat16", 512),  # the demo model: 2 x 2 x 1 x 64 x 2
    (2, 1, 64, "float32", 1_024),  # 2 x 2 x 1 x 64 x 4
    (32, 8, 128, "bfloat16", 131_072),  # a Llama-3-8B (GQA): 2 x 32 x 8 x 128 x 2 = 128 KiB
    (32, 32, 128, "float16", 524_288),  # a Llama-2-7B (MHA): 2 x 32 x 32 x 128 x 2 = 512 KiB
])
def test_kv_bytes_per_token(demo, layers, kv_heads, head_dim, dtype, expected):
    assert kv_bytes_per_token(shaped(demo, layers, kv_heads, head_dim, dtype)) == expected


def test_head_dim_defaults_to_hidden_size_over_heads(demo, tmp_path, tmp_path_factory):
    copy = copy_of(demo_model(tmp_path_factory), tmp_path)
    config = json.loads((copy / "config.json").read_text())
    del config["head_dim"]
    (copy / "config.json").write_text(json.dumps(config))
    assert read_model_facts(copy).shape.head_dim == 128 // 2
    assert kv_bytes_per_token(read_model_facts(copy)) == kv_bytes_per_token(demo)


def test_the_demo_models_estimate(demo):
    estimate = estimate_memory(demo, context_length=2048, concurrency=4)
    assert estimate.weights_bytes == 853_248  # 426,624 bf16 parameters
    assert estimate.tokens == 8_192  # 2,048 x 4
    assert estimate.kv_cache_bytes == 4_194_304  # 8,192 x 512
    assert estimate.total_bytes == 853_248 + 4_194_304


def test_a_serving_dtype_resizes_weights_and_kv_cache(demo):
    estimate = estimate_memory(demo, context_length=1024, concurrency=1, dtype="float32")
    assert estimate.weights_bytes == 426_624 * 4
    assert estimate.kv_cache_bytes == 1_024 * 1_024  # 1,024 tokens x 1,024 bytes


def test_a_context_longer_than_the_models_is_refused(demo):
    with pytest.raises(SizingError, match="context length 4096 exceeds the model's 2048 "
                                          r"\(max_position_embeddings\)"):
        estimate_memory(demo, context_length=4096, concurrency=1)


def test_sizes_missing_from_the_config_are_named(demo):
    with pytest.raises(SizingError, match="no num_hidden_layers, num_key_value_heads"):
        estimate_memory(shaped(demo, None, None, 64), context_length=16, concurrency=1)


def need(total_bytes):
    return MemoryEstimate(weights_bytes=total_bytes, kv_bytes_per_token=0, tokens=0,
                          kv_cache_bytes=0)


# Usable per 80 GiB GPU at the default 0.9: 72 GiB.
@pytest.mark.parametrize("need_gib, heads, share, tp, copies", [
    (30, 32, 0.5, 1, 2),  # 72 // 30 = 2 copies per device
    (20, 32, 0.3333, 1, 3),  # 72 // 20 = 3; 1/3 rounded down to Ray's 4 decimals
    (70, 32, 1.0, 1, 1),  # 72 // 70 = 1: a whole device
    (100, 32, 2.0, 2, 1),  # 100 / 2 = 50 <= 72
    (200, 32, 4.0, 4, 1),  # 200 / 2 = 100 > 72; 200 / 4 = 50
    (150, 12, 4.0, 4, 1),  # 150 / 2 = 75 > 72; 4 divides 12 heads: 37.5
    (150, 24, 4.0, 4, 1),  # same with 24 heads
])
def test_a_replica_takes_a_share_of_a_gpu_or_is_split_over_several(need_gib, heads, share, tp,
                                                                    copies):
    [proposal] = propose_replicas(need(need_gib * GIB), {"gpu": 80 * GIB}, heads).values()
    assert proposal.fits
    assert (proposal.accelerators_per_replica, proposal.tensor_parallel_size,
            proposal.copies_per_device) == (share, tp, copies)


def test_no_tensor_parallel_size_dividing_the_heads_fits():
    # 6 heads: tp 1 and 2 divide them; 200 / 2 = 100 GiB is still over 72.
    proposal = propose_replicas(need(200 * GIB), {"gpu": 80 * GIB}, 6)["gpu"]
    assert not proposal.fits
    assert proposal.reason == ("200 GiB needed, 72 GiB usable per gpu: no tensor-parallel size "
                               "up to 64 dividing 6 attention heads fits")


def test_each_accelerator_kind_gets_its_own_proposal(demo):
    # The demo model at 2,048 tokens x 4 on CPU slots of 2 GiB and 80 GiB GPUs.
    estimate = estimate_memory(demo, context_length=2048, concurrency=4)
    proposals = propose_replicas(estimate, {"cpu": 2 * GIB, "gpu": 80 * GIB},
                                 demo.shape.num_attention_heads)
    # 382 copies would fit one CPU slot's memory, but a CPU engine computes on whole cores.
    assert proposals["cpu"].copies_per_device == 1
    assert proposals["cpu"].accelerators_per_replica == 1.0
    assert proposals["cpu"].reason == ("4.81 MiB needed, 1.8 GiB usable per cpu slot: an "
                                       "engine computes on whole cores, so it takes 1 slot(s)")
    many = propose_replicas(estimate_memory(demo, 2048, 4), {"cpu": 2 * 1024**2}, 2)["cpu"]
    assert (many.fits, many.accelerators_per_replica) == (True, 3.0)  # 4.81 / 1.8 MiB
    # A GPU would fit 15,316; Ray's smallest share, 0.0001, stops at 10,000.
    assert proposals["gpu"].accelerators_per_replica == 0.0001
