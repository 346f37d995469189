"""Qwen3 (dense): RMSNorm pre-norm, GQA with per-head QK-norm and RoPE, SwiGLU MLP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .base import CausalLM, check_config, check_heads, init_weights
from .layers import Attention, GatedMLP, RMSNorm, rope_tables
from .output import ModelOutput

__all__ = ["SIZES", "Qwen3", "Qwen3Config"]


@dataclass(frozen=True)
class Qwen3Config:
    """Defaults are the `small` size (~10M parameters besides the embeddings)."""

    vocab_size: int = 256  # tokens; Qwen3's tokenizer has 151936
    max_seq_len: int = 256  # longest input accepted (RoPE itself has no length limit)
    n_layers: int = 6  # transformer blocks
    d_model: int = 384  # residual stream width
    n_heads: int = 6  # query heads
    n_kv_heads: int = 3  # key/value heads (GQA); n_heads must be a multiple
    head_dim: int | None = None  # per-head width; None means d_model / n_heads (Qwen3 uses 128)
    d_ff: int = 1024  # SwiGLU hidden width
    rope_theta: float = 1_000_000.0  # RoPE base
    qk_norm: bool = True  # RMSNorm over head_dim on each query and key head
    tie_embeddings: bool = False  # share embed.weight with lm_head.weight
    norm_eps: float = 1e-6  # RMSNorm epsilon
    dropout: float = 0.0  # embedding, attention-probability and residual dropout
    init_std: float = 0.02  # N(0, std) init; residual projections get std/sqrt(2·n_layers)

    def __post_init__(self) -> None:
        positive = ("vocab_size", "max_seq_len", "n_layers", "d_model", "n_heads", "n_kv_heads",
                    "head_dim", "d_ff")  # fmt: skip
        check_config(self, "qwen3", positive)
        check_heads("qwen3", self.d_model, self.n_heads, self.n_kv_heads, self.head_dim)

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads


SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "d_ff": 192, "max_seq_len": 128},
    "small": {},  # the config defaults
    # The paper's "Qwen3-0.6B-style" shape (ALGORITHMS.md 14, EO's runs): 20 layers, untied head.
    "0.6b": {"n_layers": 20, "d_model": 1024, "n_heads": 16, "n_kv_heads": 8, "head_dim": 128, "d_ff": 3072,
             "vocab_size": 151936, "max_seq_len": 4096},
    # The released Qwen3-0.6B's depth, 28 layers (the shape ANCHORS.md's optimizer-step figures
    # measure), head untied as above; tie_embeddings=True gives the release's 596,049,920 params.
    "0.6b-28l": {"n_layers": 28, "d_model": 1024, "n_heads": 16, "n_kv_heads": 8, "head_dim": 128,
                 "d_ff": 3072, "vocab_size": 151936, "max_seq_len": 4096},
}  # fmt: skip


class Block(nn.Module):
    def __init__(self, config: Qwen3Config) -> None:
        super().__init__()
        c = config
        self.attn_norm = RMSNorm(c.d_model, c.norm_eps)
        self.attn = Attention(
            c.d_model,
            c.n_heads,
            c.n_kv_heads,
            c.attn_head_dim,
            qk_norm=c.qk_norm,
            norm_eps=c.norm_eps,
            dropout=c.dropout,
        )
        self.mlp_norm = RMSNorm(c.d_model, c.norm_eps)
        self.mlp = GatedMLP(c.d_model, c.d_ff, activation="silu", dropout=c.dropout)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        x = x + self.attn(self.attn_norm(x), rope)
        return x + self.mlp(self.mlp_norm(x))


class Qwen3(CausalLM):
    def __init__(self, config: Qwen3Config) -> None:
        super().__init__(config.max_seq_len)
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        init_weights(self, config.init_std, config.n_layers)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> ModelOutput:
        self._check_input(idx)
        c = self.config
        rope = rope_tables(idx.shape[1], c.attn_head_dim, c.rope_theta, idx.device)
        x = self.dropout(self.embed(idx))
        for block in self.blocks:
            x = block(x, rope)
        return self._output(self.lm_head(self.norm(x)), targets)
