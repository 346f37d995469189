"""gpt-oss: GQA attention with biases and sinks, sliding/full layers alternating, top-k-then-softmax MoE.

Differences from the release, on purpose: plain SwiGLU experts (the release clamps, see
`moe.GptOssExperts`) and plain RoPE (the release uses YaRN scaling for its long context).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from .base import CausalLM, check_config, check_heads, init_weights
from .layers import Attention, RMSNorm, causal_window_mask, rope_tables
from .moe import MoE, MoEOutput, moe_aux_loss
from .output import ModelOutput

__all__ = ["SIZES", "GptOss", "GptOssConfig"]


@dataclass(frozen=True)
class GptOssConfig:
    """Defaults are the `small` size (~10M active parameters besides the embeddings)."""

    vocab_size: int = 256  # tokens; gpt-oss's o200k_harmony tokenizer has 201088
    max_seq_len: int = 256  # longest input accepted
    n_layers: int = 6  # transformer blocks; even layers (0, 2, ...) use the sliding window
    d_model: int = 384  # residual stream width
    n_heads: int = 6  # query heads
    n_kv_heads: int = 2  # key/value heads (GQA); n_heads must be a multiple
    head_dim: int | None = None  # per-head width; None means d_model / n_heads (gpt-oss: 64)
    n_experts: int = 8  # experts per MoE layer, E
    top_k: int = 2  # experts per token, k
    expert_d_ff: int = 384  # hidden width r of each SwiGLU expert (gpt-oss: r = d_model)
    sliding_window: int | None = 64  # keys a sliding layer sees, own position included; None: all full
    sinks: bool = True  # a learned per-head logit that joins each attention softmax's denominator
    attn_bias: bool = True  # biases on q, k, v, o
    balance_loss_coef: float = 0.0  # weight of the Switch load-balancing loss E·Σ f_i P_i
    z_loss_coef: float = 0.0  # weight of the router z-loss mean logsumexp²
    rope_theta: float = 150_000.0  # RoPE base
    tie_embeddings: bool = False  # share embed.weight with lm_head.weight
    norm_eps: float = 1e-5  # RMSNorm epsilon
    dropout: float = 0.0  # embedding, attention-probability and residual dropout
    init_std: float = 0.02  # N(0, std) init; residual projections get std/sqrt(2·n_layers)

    def __post_init__(self) -> None:
        positive = ("vocab_size", "max_seq_len", "n_layers", "d_model", "n_heads", "n_kv_heads",
                    "head_dim", "n_experts", "top_k", "expert_d_ff", "sliding_window")  # fmt: skip
        check_config(self, "gpt-oss", positive)
        check_heads("gpt-oss", self.d_model, self.n_heads, self.n_kv_heads, self.head_dim)
        if self.top_k > self.n_experts:
            raise ConfigError(f"Invalid gpt-oss top_k: {self.top_k} exceeds n_experts={self.n_experts}")
        if self.balance_loss_coef < 0 or self.z_loss_coef < 0:
            raise ConfigError("Invalid gpt-oss aux-loss coefficients: they must be >= 0")

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    def window(self, layer: int) -> int | None:
        return self.sliding_window if layer % 2 == 0 else None


SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "n_experts": 4, "top_k": 2,
             "expert_d_ff": 64, "sliding_window": 16, "max_seq_len": 128},
    "small": {},  # the config defaults
    # EO's downsized gpt-oss: 12 layers (gpt-oss-20b has 24), 16 experts (32), top-4, r = d = 2048.
    "downsized": {"n_layers": 12, "d_model": 2048, "n_heads": 32, "n_kv_heads": 8, "head_dim": 64,
                  "n_experts": 16, "top_k": 4, "expert_d_ff": 2048, "vocab_size": 201088,
                  "sliding_window": 128, "max_seq_len": 4096},
}  # fmt: skip


class Block(nn.Module):
    def __init__(self, config: GptOssConfig, layer: int) -> None:
        super().__init__()
        c = config
        self.attn_norm = RMSNorm(c.d_model, c.norm_eps)
        self.attn = Attention(
            c.d_model,
            c.n_heads,
            c.n_kv_heads,
            c.attn_head_dim,
            bias=c.attn_bias,
            sinks=c.sinks,
            window=c.window(layer),
            dropout=c.dropout,
        )
        self.moe_norm = RMSNorm(c.d_model, c.norm_eps)
        self.moe = MoE(
            c.d_model,
            c.n_experts,
            c.top_k,
            c.expert_d_ff,
            layout="interleave",
            selection="topk_softmax",
            router_bias=True,
        )
        self.dropout = nn.Dropout(c.dropout)

    def forward(
        self, x: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor | None
    ) -> tuple[Tensor, MoEOutput]:
        x = x + self.attn(self.attn_norm(x), rope, mask)
        routed = self.moe(self.moe_norm(x))
        return x + self.dropout(routed.y), routed


class GptOss(CausalLM):
    def __init__(self, config: GptOssConfig) -> None:
        super().__init__(config.max_seq_len)
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        init_weights(self, config.init_std, config.n_layers)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> ModelOutput:
        self._check_input(idx)
        c, T = self.config, idx.shape[1]
        rope = rope_tables(T, c.attn_head_dim, c.rope_theta, idx.device)
        window_mask = causal_window_mask(T, c.sliding_window, idx.device)
        x = self.dropout(self.embed(idx))
        routed: list[MoEOutput] = []
        for i, block in enumerate(self.blocks):
            x, layer = block(x, rope, window_mask if c.window(i) is not None else None)
            routed.append(layer)
        aux = moe_aux_loss(routed, c.balance_loss_coef, c.z_loss_coef)
        return self._output(self.lm_head(self.norm(x)), targets, aux, [r.stats for r in routed])
