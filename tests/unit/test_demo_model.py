"""The demo model is made locally, fast, with a working tokenizer and chat template."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_model_command_writes_a_loadable_llama(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "deployments.cli", "demo-model", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["hidden_size"] // config["num_attention_heads"] == 64  # CPU attention needs 64

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.vocab_size <= config["vocab_size"]
    ids = tok("Permission is hereby granted")["input_ids"]
    assert tok.decode(ids) == "Permission is hereby granted"
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                       add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>"
