"""Small Hugging Face models built from configs (no weights are downloaded)."""

from __future__ import annotations

import logging

import torch
import transformers as hf

logging.getLogger("transformers").setLevel(logging.ERROR)

_COMMON = {
    "vocab_size": 96,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 2,
}

CONFIGS = {
    "qwen3": lambda: hf.Qwen3Config(intermediate_size=48, tie_word_embeddings=False, **_COMMON),
    "qwen3-tied": lambda: hf.Qwen3Config(intermediate_size=48, tie_word_embeddings=True, **_COMMON),
    "gemma3": lambda: hf.Gemma3TextConfig(intermediate_size=48, **_COMMON),
    "olmoe": lambda: hf.OlmoeConfig(
        intermediate_size=24,
        num_experts=4,
        num_experts_per_tok=2,
        **{k: v for k, v in _COMMON.items() if k != "head_dim"},
    ),
    "qwen3-moe": lambda: hf.Qwen3MoeConfig(
        intermediate_size=48,
        moe_intermediate_size=24,
        num_experts=4,
        num_experts_per_tok=2,
        decoder_sparse_step=1,
        **_COMMON,
    ),
    "gpt-oss": lambda: hf.GptOssConfig(
        intermediate_size=24, num_local_experts=4, num_experts_per_tok=2, **_COMMON
    ),
    "gpt2": lambda: hf.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=96, bos_token_id=0, eos_token_id=1
    ),
}


def build(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return hf.AutoModelForCausalLM.from_config(CONFIGS[name]())


def lm_loss(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return model(input_ids=tokens, labels=tokens).loss
