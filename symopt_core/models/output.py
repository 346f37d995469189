"""What every reference model returns: logits, losses, and per-layer MoE routing statistics."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["ModelOutput", "RoutingStats"]


@dataclass(frozen=True)
class RoutingStats:
    """One MoE layer's routing in one forward pass; every field is detached (ALGORITHMS.md 13)."""

    counts: Tensor  # [E] int64: number of top-k assignments to each expert, c_i (sums to tokens·top_k)
    mean_probs: Tensor  # [E] float32: router softmax probability of each expert, averaged over tokens, P_i
    tokens: int  # N, tokens routed in this layer
    top_k: int  # experts per token
    logsumexp_mean: float  # mean over tokens of logsumexp(router logits)
    z_loss: float = 0.0  # mean over tokens of logsumexp(router logits)², the router z-loss

    @property
    def n_experts(self) -> int:
        return int(self.counts.numel())


@dataclass
class ModelOutput:
    """`model(idx, targets)`: logits [B, T, V]; losses are None without targets."""

    logits: Tensor  # [B, T, V]
    aux_loss: Tensor  # weighted MoE auxiliary losses (scalar); a 0 tensor for dense models
    loss: Tensor | None = None  # ce_loss + aux_loss: what training backpropagates
    ce_loss: Tensor | None = None  # mean next-token cross-entropy (positions with target -1 ignored)
    routing: list[RoutingStats] = field(default_factory=list)  # one entry per MoE layer, in depth order
