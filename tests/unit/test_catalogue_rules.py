"""A checkpoint is refused with every reason at once, each naming the file: broken copies of
the real demo model and real peft adapters, checked against the installed vLLM's
architectures."""

from __future__ import annotations

import pytest

from serving.catalogue.facts import read_adapter_facts, read_model_facts
from serving.catalogue.rules import FOLDER, check_adapter, check_model
from tests.unit.catalogue_files import (
    adapter_for_other_base,
    copy_of,
    demo_adapter,
    demo_model,
    edit_json,
    sharded_demo_model,
)

LLAMA = {"LlamaForCausalLM"}


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    return demo_model(tmp_path_factory)


@pytest.fixture(scope="session")
def adapter(tmp_path_factory):
    return demo_adapter(tmp_path_factory)


@pytest.fixture(scope="session")
def vllm_architectures():
    from serving.catalogue.vllm_support import supported_architectures

    return supported_architectures()


def problems(folder, supported=frozenset(LLAMA), **kwargs):
    return [str(p) for p in check_model(read_model_facts(folder), supported, **kwargs)]


def test_the_demo_model_passes_against_the_installed_vllm(model, vllm_architectures):
    assert "LlamaForCausalLM" in vllm_architectures
    assert check_model(read_model_facts(model), vllm_architectures) == []


def test_an_architecture_vllm_does_not_know_is_refused(model, tmp_path, vllm_architectures):
    copy = copy_of(model, tmp_path)
    edit_json(copy / "config.json", architectures=["FancyNewForCausalLM"])
    found = problems(copy, vllm_architectures)
    assert len(found) == 1
    assert found[0].startswith("config.json: architecture FancyNewForCausalLM is not supported "
                               "by the installed vLLM")


def test_a_missing_shard_is_refused_naming_it_and_the_index(tmp_path, tmp_path_factory):
    copy = copy_of(sharded_demo_model(tmp_path_factory), tmp_path)
    assert problems(copy) == []
    (copy / "model-00002-of-00002.safetensors").unlink()
    assert problems(copy) == [("model-00002-of-00002.safetensors: is named by "
                              "model.safetensors.index.json but missing")]


def test_a_missing_tokenizer_is_refused(model, tmp_path):
    copy = copy_of(model, tmp_path)
    (copy / "tokenizer.json").unlink()
    assert problems(copy) == [("tokenizer_config.json: has no vocabulary beside it (no "
                              "tokenizer.json, vocab.json, tokenizer.model or similar)")]
    (copy / "tokenizer_config.json").unlink()
    assert problems(copy) == [("tokenizer.json: is missing, and so is tokenizer_config.json: "
                              "no tokenizer")]


def test_a_digest_that_does_not_match_is_refused(model, tmp_path):
    expected = read_model_facts(model).digest
    assert problems(model, expected_digest=expected) == []

    copy = copy_of(model, tmp_path)
    (copy / "generation_config.json").write_text("{}")
    [found] = problems(copy, expected_digest=expected)
    assert found.startswith(f"{FOLDER}: content digest sha256:")
    assert found.endswith(f"does not match the expected {expected}")


def test_weights_only_as_pickles_are_refused(model, tmp_path):
    copy = copy_of(model, tmp_path)
    (copy / "model.safetensors").rename(copy / "pytorch_model.bin")
    assert problems(copy) == [(f"{FOLDER}: weights only as PyTorch pickles (pytorch_model.bin); "
                              f"safetensors are needed")]


def test_every_problem_is_reported_not_the_first_only(model, tmp_path):
    copy = copy_of(model, tmp_path)
    edit_json(copy / "config.json", architectures=["FancyNewForCausalLM"])
    (copy / "model.safetensors").unlink()
    (copy / "tokenizer.json").unlink()
    (copy / "tokenizer_config.json").unlink()
    found = problems(copy, expected_digest="sha256:0")
    assert [p.split(":")[0] for p in found] == ["config.json", FOLDER, "tokenizer.json", FOLDER]


def test_the_demo_adapter_fits_the_demo_model(model, adapter):
    assert check_adapter(read_adapter_facts(adapter), read_model_facts(model), 8) == []


def test_an_adapter_of_too_high_a_rank_is_refused(model, tmp_path_factory):
    rank16 = read_adapter_facts(demo_adapter(tmp_path_factory, rank=16))
    found = [str(p) for p in check_adapter(rank16, read_model_facts(model), max_lora_rank=8)]
    assert found == ["adapter_config.json: rank r=16 exceeds the endpoint's max_lora_rank 8"]


def test_an_adapter_on_an_endpoint_without_lora_is_refused(model, adapter):
    found = check_adapter(read_adapter_facts(adapter), read_model_facts(model), None)
    assert [str(p) for p in found] == [
        "adapter_config.json: the endpoint does not enable LoRA (no max_lora_rank)"]


def test_an_adapter_for_another_base_is_refused_by_its_shapes(model, tmp_path_factory):
    # Same architecture (a Llama), hidden size 256 instead of 128: the names match, the
    # sizes do not. Per layer q's lora_A [8, 256] and lora_B [256, 8] and v's lora_A miss;
    # v's lora_B [64, 8] fits (one KV head of 64 in both): 3 x 2 layers = 6.
    other = read_adapter_facts(adapter_for_other_base(tmp_path_factory))
    [found] = [str(p) for p in check_adapter(other, read_model_facts(model), 8)]
    assert found.startswith("adapter_model.safetensors: 6 tensor(s) do not fit the endpoint's "
                            "model, e.g. base_model.model.model.layers.0.self_attn.q_proj."
                            "lora_A.weight: shape [8, 256] needs "
                            "model.layers.0.self_attn.q_proj.weight to have 256 in dimension 1, "
                            "it is [128, 128]")
    assert found.endswith("the adapter was made for another base model")


def test_an_adapter_for_another_architecture_is_refused(model, adapter, tmp_path):
    copy = copy_of(adapter, tmp_path)
    edit_json(copy / "adapter_config.json",
              auto_mapping={"base_model_class": "MistralForCausalLM"})
    found = check_adapter(read_adapter_facts(copy), read_model_facts(model), 8)
    assert [str(p) for p in found] == [("adapter_config.json: was made for a MistralForCausalLM, "
                                       "the endpoint's model is LlamaForCausalLM")]


def test_target_modules_the_base_lacks_are_refused(model, adapter, tmp_path):
    copy = copy_of(adapter, tmp_path)
    edit_json(copy / "adapter_config.json", target_modules=["q_proj", "v_proj", "c_attn"])
    found = check_adapter(read_adapter_facts(copy), read_model_facts(model), 8)
    assert [str(p) for p in found] == [
        "adapter_config.json: target_modules c_attn do not exist in the endpoint's model"]


def test_an_adapter_without_weights_is_refused(model, adapter, tmp_path):
    copy = copy_of(adapter, tmp_path)
    (copy / "adapter_model.safetensors").unlink()
    found = check_adapter(read_adapter_facts(copy), read_model_facts(model), 8)
    assert [str(p) for p in found] == ["adapter_model.safetensors: is missing"]
