"""A checkpoint's facts come from its config files and safetensors headers, never its weights:
read here off the real demo model, a sharded copy of it, and adapters made with peft."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from deployments.demo_model import DEMO_LLAMA
from serving.catalogue.facts import (
    folder_digest,
    is_adapter_dir,
    read_adapter_facts,
    read_model_facts,
)
from tests.unit.catalogue_files import copy_of, demo_adapter, demo_model, sharded_demo_model

# The demo Llama's parameters (hidden 128, intermediate 256, 2 layers, 2 heads of 64, 1 KV
# head, vocab 512, untied lm_head):
#   embeddings and lm_head: 2 x 512 x 128                                   = 131,072
#   per layer: q 128x128 + k 64x128 + v 64x128 + o 128x128 = 49,152
#              gate, up, down 3 x 128x256 = 98,304; two norms 2 x 128 = 256 -> 147,712
#   two layers                                                              = 295,424
#   final norm                                                              =     128
DEMO_PARAMETERS = 131_072 + 2 * 147_712 + 128  # 426,624, 2 bytes each in bf16


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    return demo_model(tmp_path_factory)


@pytest.fixture(scope="session")
def adapter(tmp_path_factory):
    return demo_adapter(tmp_path_factory)


def test_the_demo_models_facts(model):
    facts = read_model_facts(model)

    assert facts.architectures == ("LlamaForCausalLM",)
    assert facts.model_type == "llama"
    assert facts.weights.parameter_count == DEMO_PARAMETERS
    assert facts.weights.total_bytes == 2 * DEMO_PARAMETERS
    assert facts.weights.dtype == "bfloat16" == facts.config_dtype
    assert facts.context_length == DEMO_LLAMA["max_position_embeddings"]
    assert facts.context_length_key == "max_position_embeddings"
    assert (facts.shape.num_hidden_layers, facts.shape.num_key_value_heads,
            facts.shape.head_dim, facts.shape.vocab_size) == (2, 1, 64, 512)
    assert facts.has_tokenizer and facts.has_chat_template
    assert facts.problems == ()
    assert facts.digest.startswith("sha256:")


def test_weights_bytes_are_the_tensor_data_in_the_file(model):
    # The file is an 8-byte length, the JSON header, then exactly the tensors' data.
    raw = (model / "model.safetensors").read_bytes()
    header_length = int.from_bytes(raw[:8], "little")
    assert read_model_facts(model).weights.total_bytes == len(raw) - 8 - header_length


def test_a_sharded_checkpoint_is_read_through_its_index(model, tmp_path_factory):
    sharded = read_model_facts(sharded_demo_model(tmp_path_factory))
    whole = read_model_facts(model)

    assert sharded.weights.index_file == "model.safetensors.index.json"
    assert sharded.weights.files_named == ("model-00001-of-00002.safetensors",
                                           "model-00002-of-00002.safetensors")
    assert sharded.weights.files_read == sharded.weights.files_named
    assert sharded.weights.parameter_count == whole.weights.parameter_count
    assert sharded.weights.shapes == whole.weights.shapes


def test_the_digest_follows_content_and_names_not_the_folders_name(model, tmp_path):
    copy = copy_of(model, tmp_path)
    renamed = copy.rename(tmp_path / "another-name")
    assert folder_digest(renamed) == read_model_facts(model).digest

    (renamed / "generation_config.json").write_text("{}")
    assert folder_digest(renamed) != read_model_facts(model).digest


def test_the_chat_template_may_sit_in_tokenizer_config(model, tmp_path):
    copy = copy_of(model, tmp_path)
    template = (copy / "chat_template.jinja").read_text()
    (copy / "chat_template.jinja").unlink()
    assert not read_model_facts(copy).has_chat_template

    config = json.loads((copy / "tokenizer_config.json").read_text())
    (copy / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
    assert read_model_facts(copy).has_chat_template


def test_the_smallest_context_key_wins_as_in_vllm(model, tmp_path):
    copy = copy_of(model, tmp_path)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "seq_length": 1024}))
    facts = read_model_facts(copy)
    assert (facts.context_length, facts.context_length_key) == (1024, "seq_length")


def test_a_corrupt_weights_file_is_a_problem_naming_it(model, tmp_path):
    copy = copy_of(model, tmp_path)
    (copy / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json")
    facts = read_model_facts(copy)
    assert [p.file for p in facts.problems] == ["model.safetensors"]
    assert "truncated" in facts.problems[0].reason


def test_the_demo_adapters_facts(adapter):
    facts = read_adapter_facts(adapter)

    assert is_adapter_dir(adapter)
    assert facts.peft_type == "LORA"
    assert (facts.rank, facts.lora_alpha) == (8, 8)
    assert facts.target_modules == ("q_proj", "v_proj")
    assert facts.base_architecture == "LlamaForCausalLM"
    assert facts.weights_file == "adapter_model.safetensors"
    # lora_A [8, 128] and lora_B [out, 8] on q (out 128) and v (out 64), in 2 layers:
    # 2 x (8x128 + 128x8 + 8x128 + 64x8) = 2 x 3,584
    assert facts.weights.parameter_count == 7_168
    assert facts.problems == ()


def test_demo_adapter_command_writes_the_same_adapter_for_the_same_seed(model, adapter, tmp_path):
    out = tmp_path / "adapter"
    result = subprocess.run(
        [sys.executable, "-m", "deployments.cli", "demo-adapter", str(out), "--base", str(model)],
        check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["init_lora_weights"] is False  # random B: output differs from the base's
    assert (config["r"], sorted(config["target_modules"])) == (8, ["q_proj", "v_proj"])
    made = (out / "adapter_model.safetensors").read_bytes()
    assert made == (adapter / "adapter_model.safetensors").read_bytes()
