"""OLMoE: Qwen3-style attention (GQA, QK-norm, RoPE) with a softmax-then-top-k mixture-of-experts MLP.

Difference from the release: OLMoE normalises q and k over the whole projection (H·hd); this reference
uses the per-head QK-norm of Qwen3, as the other families do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from .base import CausalLM, check_config, check_heads, init_weights
from .layers import Attention, RMSNorm, rope_tables
from .moe import MoE, MoEOutput, moe_aux_loss
from .output import ModelOutput

__all__ = ["SIZES", "OLMoE", "OLMoEConfig"]


@dataclass(frozen=True)
class OLMoEConfig:
    """Defaults are the `small` size (~10M active parameters besides the embeddings)."""

    vocab_size: int = 256  # tokens; OLMoE's tokenizer has 50304 (padded)
    max_seq_len: int = 256  # longest input accepted
    n_layers: int = 6  # transformer blocks, each with a MoE MLP
    d_model: int = 384  # residual stream width
    n_heads: int = 6  # query heads
    n_kv_heads: int = 6  # key/value heads (OLMoE uses full multi-head attention)
    head_dim: int | None = None  # per-head width; None means d_model / n_heads
    n_experts: int = 8  # experts per MoE layer, E
    top_k: int = 2  # experts per token, k
    expert_d_ff: int = 512  # hidden width r of each SwiGLU expert
    renormalize: bool = False  # rescale the k kept probabilities to sum to 1 (OLMoE does not)
    balance_loss_coef: float = 0.0  # weight of the Switch load-balancing loss E·Σ f_i P_i (OLMoE: 0.01)
    z_loss_coef: float = 0.0  # weight of the router z-loss mean logsumexp² (OLMoE: 0.001)
    rope_theta: float = 10_000.0  # RoPE base
    qk_norm: bool = True  # RMSNorm over head_dim on each query and key head
    tie_embeddings: bool = False  # share embed.weight with lm_head.weight
    norm_eps: float = 1e-5  # RMSNorm epsilon
    dropout: float = 0.0  # embedding, attention-probability and residual dropout
    init_std: float = 0.02  # N(0, std) init; residual projections get std/sqrt(2·n_layers)

    def __post_init__(self) -> None:
        positive = ("vocab_size", "max_seq_len", "n_layers", "d_model", "n_heads", "n_kv_heads",
                    "head_dim", "n_experts", "top_k", "expert_d_ff")  # fmt: skip
        check_config(self, "olmoe", positive)
        check_heads("olmoe", self.d_model, self.n_heads, self.n_kv_heads, self.head_dim)
        if self.top_k > self.n_experts:
            raise ConfigError(f"Invalid olmoe top_k: {self.top_k} exceeds n_experts={self.n_experts}")
        if self.balance_loss_coef < 0 or self.z_loss_coef < 0:
            raise ConfigError("Invalid olmoe aux-loss coefficients: they must be >= 0")

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads


SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 4, "n_experts": 4, "top_k": 2,
             "expert_d_ff": 64, "max_seq_len": 128},
    "small": {},  # the config defaults
    # EO's downsized OLMoE-1B-7B: 12 layers (the release has 16), 32 experts of width 1024 (release: 64).
    "1b-7b": {"n_layers": 12, "d_model": 2048, "n_heads": 16, "n_kv_heads": 16, "head_dim": 128,
              "n_experts": 32, "top_k": 8, "expert_d_ff": 1024, "vocab_size": 50304, "max_seq_len": 4096},
}  # fmt: skip


class Block(nn.Module):
    def __init__(self, config: OLMoEConfig) -> None:
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
        self.moe_norm = RMSNorm(c.d_model, c.norm_eps)
        self.moe = MoE(
            c.d_model,
            c.n_experts,
            c.top_k,
            c.expert_d_ff,
            layout="concat",
            selection="softmax_topk",
            renormalize=c.renormalize,
        )
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor]) -> tuple[Tensor, MoEOutput]:
        x = x + self.attn(self.attn_norm(x), rope)
        routed = self.moe(self.moe_norm(x))
        return x + self.dropout(routed.y), routed


class OLMoE(CausalLM):
    def __init__(self, config: OLMoEConfig) -> None:
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
        routed: list[MoEOutput] = []
        for block in self.blocks:
            x, layer = block(x, rope)
            routed.append(layer)
        aux = moe_aux_loss(routed, c.balance_loss_coef, c.z_loss_coef)
        return self._output(self.lm_head(self.norm(x)), targets, aux, [r.stats for r in routed])
