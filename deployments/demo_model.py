"""Writes the demo model: a small real Llama with random weights and a locally trained tokenizer.

Nothing is downloaded. The weights are noise, but the architecture, tokenizer, chat template,
sampling and streaming are real, so vLLM (and plain `vllm serve`) load it like any Hugging Face
model folder.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

# head_dim = hidden_size / num_attention_heads must be 64: vLLM's CPU attention kernel refuses 16.
DEMO_LLAMA = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=2048,
    vocab_size=512,
)

# A ChatML template: simple, and vLLM's chat serving renders it like any other.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Local text to train the tokenizer on; Debian ships these on every machine.
_CORPUS_GLOBS = ("/usr/share/common-licenses/*",)
_FALLBACK_CORPUS = (
    "The quick brown fox jumps over the lazy dog. " * 50
    + "An AI factory serves generative models to start-ups, researchers and public bodies. " * 50
)


def _corpus() -> list[str]:
    texts = []
    for pattern in _CORPUS_GLOBS:
        for path in sorted(glob.glob(pattern)):
            if os.path.isfile(path):
                with open(path, encoding="utf-8", errors="ignore") as f:
                    texts.append(f.read())
    return texts or [_FALLBACK_CORPUS]


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )


def write_demo_model(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write the demo model into `path` (created if missing) and return it."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(DEMO_LLAMA["vocab_size"])
    config = LlamaConfig(
        **DEMO_LLAMA,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def is_model_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / "config.json").is_file() and (p / "tokenizer.json").is_file()
