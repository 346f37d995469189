"""Gemma 3 (text): local/global attention interleaving, sandwich norms, GeGLU MLP, scaled tied embedding.

Differences from the released model, on purpose: one query scale 1/sqrt(head_dim) (Gemma 3 1B's
query_pre_attn_scalar equals its head_dim, 256) and no RoPE scaling for long contexts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .base import CausalLM, check_config, check_heads, init_weights
from .layers import Attention, GatedMLP, RMSNorm, causal_window_mask, rope_tables
from .output import ModelOutput

__all__ = ["SIZES", "Gemma3", "Gemma3Config"]


@dataclass(frozen=True)
class Gemma3Config:
    """Defaults are the `small` size (~10M parameters besides the embeddings)."""

    vocab_size: int = 256  # tokens; Gemma 3's tokenizer has 262144
    max_seq_len: int = 256  # longest input accepted
    n_layers: int = 6  # transformer blocks
    d_model: int = 384  # residual stream width
    n_heads: int = 6  # query heads
    n_kv_heads: int = 2  # key/value heads (GQA); n_heads must be a multiple
    head_dim: int | None = None  # per-head width; None means d_model / n_heads (Gemma 3 1B: 256)
    d_ff: int = 1536  # GeGLU hidden width
    sliding_window: int = 64  # keys a local layer sees, the query's own position included
    global_every: int = 6  # layer i is global when (i+1) % global_every == 0: 5 local, then 1 global
    rope_theta: float = 1_000_000.0  # RoPE base of the global layers
    rope_local_theta: float = 10_000.0  # RoPE base of the local (sliding-window) layers
    tie_embeddings: bool = True  # share embed.weight with lm_head.weight (Gemma always does)
    norm_eps: float = 1e-6  # RMSNorm epsilon
    dropout: float = 0.0  # embedding, attention-probability and residual dropout
    init_std: float = 0.02  # N(0, std) init; residual projections get std/sqrt(2·n_layers)

    def __post_init__(self) -> None:
        positive = ("vocab_size", "max_seq_len", "n_layers", "d_model", "n_heads", "n_kv_heads",
                    "head_dim", "d_ff", "sliding_window", "global_every")  # fmt: skip
        check_config(self, "gemma3", positive)
        check_heads("gemma3", self.d_model, self.n_heads, self.n_kv_heads, self.head_dim)

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    def is_global(self, layer: int) -> bool:
        return (layer + 1) % self.global_every == 0


SIZES: dict[str, dict[str, Any]] = {
    # Two layers, local then global, so that both kinds are exercised.
    "tiny": {"n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 1, "d_ff": 256, "max_seq_len": 128,
             "sliding_window": 16, "global_every": 2},
    "small": {},  # the config defaults
    # EO's "Gemma-3-1B-style" runs: Gemma 3 1B's widths and vocabulary, 18 layers (the release has 26).
    "1b": {"n_layers": 18, "d_model": 1152, "n_heads": 4, "n_kv_heads": 1, "head_dim": 256, "d_ff": 6912,
           "vocab_size": 262144, "sliding_window": 512, "max_seq_len": 4096},
}  # fmt: skip


class Block(nn.Module):
    """Pre- and post-norms around both sublayers: x + post(f(pre(x)))."""

    def __init__(self, config: Gemma3Config, layer: int) -> None:
        super().__init__()
        c = config
        self.attn_norm = RMSNorm(c.d_model, c.norm_eps, zero_centered=True)
        self.attn = Attention(
            c.d_model,
            c.n_heads,
            c.n_kv_heads,
            c.attn_head_dim,
            qk_norm=True,
            norm_eps=c.norm_eps,
            zero_centered_norm=True,
            window=None if c.is_global(layer) else c.sliding_window,
            dropout=c.dropout,
        )
        self.attn_post_norm = RMSNorm(c.d_model, c.norm_eps, zero_centered=True)
        self.mlp_norm = RMSNorm(c.d_model, c.norm_eps, zero_centered=True)
        self.mlp = GatedMLP(c.d_model, c.d_ff, activation="gelu_tanh", dropout=c.dropout)
        self.mlp_post_norm = RMSNorm(c.d_model, c.norm_eps, zero_centered=True)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor | None) -> Tensor:
        x = x + self.attn_post_norm(self.attn(self.attn_norm(x), rope, mask))
        return x + self.mlp_post_norm(self.mlp(self.mlp_norm(x)))


class Gemma3(CausalLM):
    def __init__(self, config: Gemma3Config) -> None:
        super().__init__(config.max_seq_len)
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps, zero_centered=True)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        init_weights(self, config.init_std, config.n_layers)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> ModelOutput:
        self._check_input(idx)
        c, T, device = self.config, idx.shape[1], idx.device
        rope_global = rope_tables(T, c.attn_head_dim, c.rope_theta, device)
        rope_local = rope_tables(T, c.attn_head_dim, c.rope_local_theta, device)
        local_mask = causal_window_mask(T, c.sliding_window, device)
        x = self.embed(idx)
        # Gemma scales the embedding by sqrt(d), rounded to the activation dtype as the release does.
        x = self.dropout(x * x.new_tensor(math.sqrt(c.d_model)))
        for i, block in enumerate(self.blocks):
            x = block(x, rope_global, None) if c.is_global(i) else block(x, rope_local, local_mask)
        return self._output(self.lm_head(self.norm(x)), targets)
