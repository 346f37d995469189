"""GPT-2, as nanoGPT builds it: learned positions, LayerNorm, fused qkv, GELU MLP, tied embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from .base import CausalLM, check_config, check_heads, init_weights
from .layers import GeluMLP
from .output import ModelOutput

__all__ = ["GPT2", "SIZES", "GPT2Config"]


@dataclass(frozen=True)
class GPT2Config:
    """Defaults are the `small` size (nanoGPT's shakespeare-char GPU config, ~10M parameters)."""

    vocab_size: int = 256  # tokens; 50304 = GPT-2's 50257 padded to a multiple of 64
    max_seq_len: int = 256  # context length = rows of the learned position embedding
    n_layers: int = 6  # transformer blocks
    n_heads: int = 6  # attention heads; head_dim = d_model / n_heads
    d_model: int = 384  # residual stream width
    d_ff: int | None = None  # MLP hidden width; None means 4·d_model
    dropout: float = 0.0  # embedding, attention-probability and residual dropout
    bias: bool = True  # biases in the linears and LayerNorms (GPT-2 has them)
    norm_eps: float = 1e-5  # LayerNorm epsilon
    init_std: float = 0.02  # N(0, std) init; residual projections get std/sqrt(2·n_layers)

    def __post_init__(self) -> None:
        positive = ("vocab_size", "max_seq_len", "n_layers", "n_heads", "d_model", "d_ff")
        check_config(self, "gpt2", positive)
        check_heads("gpt2", self.d_model, self.n_heads, self.n_heads, None, rope=False)

    @property
    def ffn_dim(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model


# Named sizes: overrides of the config defaults. `small` is the defaults themselves.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"n_layers": 2, "n_heads": 4, "d_model": 64, "max_seq_len": 128},
    "small": {},
    "124m": {"n_layers": 12, "n_heads": 12, "d_model": 768, "max_seq_len": 1024, "vocab_size": 50304},
}  # fmt: skip


class FusedAttention(nn.Module):
    """Causal multi-head attention with one [3d, d] qkv projection (rows: all q heads, all k, all v)."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.head_dim = config.d_model // config.n_heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.o = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, d = x.shape
        q, k, v = (
            t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for t in self.qkv(x).split(d, -1)
        )
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        return self.resid_dropout(self.o(y.transpose(1, 2).reshape(B, T, d)))


class Block(nn.Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)
        self.attn = FusedAttention(config)
        self.mlp_norm = nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)
        self.mlp = GeluMLP(config.d_model, config.ffn_dim, bias=config.bias, dropout=config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class GPT2(CausalLM):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config.max_seq_len)
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_embed = nn.Embedding(config.max_seq_len, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight  # tied: one Parameter object, two roles
        init_weights(self, config.init_std, config.n_layers)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> ModelOutput:
        self._check_input(idx)
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.dropout(self.embed(idx) + self.pos_embed(pos))
        for block in self.blocks:
            x = block(x)
        return self._output(self.lm_head(self.norm(x)), targets)
