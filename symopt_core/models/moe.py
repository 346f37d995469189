"""Mixture-of-experts MLP: a softmax router, top-k selection, stacked expert tensors, routing statistics.

Two storage layouts, as the released models keep them (DESIGN.md, "Hugging Face models"):
  `Experts` (OLMoE, Qwen3-MoE):  gate_up [E, 2r, d] (gate rows, then up rows), down [E, d, r]
  `GptOssExperts` (gpt-oss):     gate_up [E, d, 2r] (input first; gate = [..., ::2], up = [..., 1::2]),
                                 down [E, r, d], plus biases gate_up_bias [E, 2r] and down_bias [E, d]
Each module declares these layouts in `symopt_layouts`, which `symopt_core.params.classify` reads.
Every token goes to exactly k experts; no capacity limit, no token dropping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from .output import RoutingStats

__all__ = ["Experts", "GptOssExperts", "MoE", "MoEOutput", "moe_aux_loss"]

Selection = Literal["softmax_topk", "topk_softmax"]


class _StackedExperts(nn.Module):
    """E SwiGLU experts in stacked tensors; subclasses say how one expert reads its slice."""

    symopt_layouts: ClassVar[dict[str, str]]

    def __init__(self, n_experts: int, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.n_experts = n_experts
        # Names the classifier checks the stored shapes against.
        self.hidden_size = d_model
        self.intermediate_size = d_ff

    def expert(self, e: int, x: Tensor) -> Tensor:
        """Expert e applied to the tokens x [n, d] routed to it."""
        raise NotImplementedError

    def forward(self, x: Tensor, idx: Tensor, weights: Tensor) -> Tensor:
        """Σ_j weights[t, j] · expert_{idx[t, j]}(x[t]) for x [N, d], idx and weights [N, k]."""
        k = idx.shape[1]
        flat = idx.flatten()
        # Sort the N·k assignments by expert: expert e's tokens are then one contiguous slice.
        order = flat.argsort(stable=True)
        counts = torch.bincount(flat, minlength=self.n_experts).tolist()  # one host sync per layer
        token = order // k
        w = weights.flatten()[order].unsqueeze(-1).to(x.dtype)
        out = torch.zeros_like(x)
        start = 0
        for e, n in enumerate(counts):
            if n:
                t = token[start : start + n]
                y = self.expert(e, x.index_select(0, t)) * w[start : start + n]
                out.index_add_(0, t, y.to(out.dtype))  # autocast may have computed y in bf16
            start += n
        return out


class Experts(_StackedExperts):
    """OLMoE layout: gate_up [E, 2r, d] with gate rows first, down [E, d, r]; weights stored (out, in)."""

    symopt_layouts: ClassVar[dict[str, str]] = {"gate_up": "gate_up.concat", "down": "matrix"}

    def __init__(self, n_experts: int, d_model: int, d_ff: int) -> None:
        super().__init__(n_experts, d_model, d_ff)
        self.gate_up = nn.Parameter(torch.empty(n_experts, 2 * d_ff, d_model))
        self.down = nn.Parameter(torch.empty(n_experts, d_model, d_ff))

    def expert(self, e: int, x: Tensor) -> Tensor:
        gate, up = (x @ self.gate_up[e].T).chunk(2, dim=-1)
        return (F.silu(gate) * up) @ self.down[e].T


class GptOssExperts(_StackedExperts):
    """gpt-oss layout: stored (in, out), gate/up interleaved on the last dim, with biases.

    The release uses a clamped SwiGLU, (up + 1) · gate · σ(1.702 · gate) with both clamped at 7;
    this reference keeps the plain SwiGLU silu(gate) · up of the other families.
    """

    symopt_layouts: ClassVar[dict[str, str]] = {"gate_up": "gate_up.interleave.t", "down": "matrix.t"}

    def __init__(self, n_experts: int, d_model: int, d_ff: int) -> None:
        super().__init__(n_experts, d_model, d_ff)
        self.gate_up = nn.Parameter(torch.empty(n_experts, d_model, 2 * d_ff))
        self.gate_up_bias = nn.Parameter(torch.zeros(n_experts, 2 * d_ff))
        self.down = nn.Parameter(torch.empty(n_experts, d_ff, d_model))
        self.down_bias = nn.Parameter(torch.zeros(n_experts, d_model))

    def expert(self, e: int, x: Tensor) -> Tensor:
        h = x @ self.gate_up[e] + self.gate_up_bias[e]
        return (F.silu(h[..., ::2]) * h[..., 1::2]) @ self.down[e] + self.down_bias[e]


@dataclass
class MoEOutput:
    y: Tensor  # [B, T, d]
    stats: RoutingStats  # detached, for logging (moe_metrics.load_metrics)
    balance_loss: Tensor  # Switch load-balancing loss E·Σ f_i P_i (f detached, grad through P)
    z_loss: Tensor  # router z-loss mean_t logsumexp(s_t)²


class MoE(nn.Module):
    """Router + experts. `selection` is the order of softmax and top-k:

    softmax_topk (OLMoE): p = softmax(s); keep the k largest p (renormalised to sum 1 if asked).
    topk_softmax (gpt-oss): keep the k largest logits s; weights = softmax over those k only.
    """

    def __init__(
        self,
        d_model: int,
        n_experts: int,
        top_k: int,
        d_ff: int,
        *,
        layout: Literal["concat", "interleave"] = "concat",
        selection: Selection = "softmax_topk",
        renormalize: bool = False,
        router_bias: bool = False,
    ) -> None:
        super().__init__()
        self.n_experts, self.top_k = n_experts, top_k
        self.selection, self.renormalize = selection, renormalize
        self.router = nn.Linear(d_model, n_experts, bias=router_bias)
        experts_cls = Experts if layout == "concat" else GptOssExperts
        self.experts: _StackedExperts = experts_cls(n_experts, d_model, d_ff)

    def forward(self, x: Tensor) -> MoEOutput:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        # Routing in float32: the softmax, top-k ties and logsumexp are precision-sensitive in bf16.
        logits = self.router(x).float()  # [N, E]
        probs = logits.softmax(dim=-1)
        if self.selection == "softmax_topk":
            weights, idx = probs.topk(self.top_k, dim=-1)
            if self.renormalize:
                weights = weights / weights.sum(dim=-1, keepdim=True)
        else:
            top_logits, idx = logits.topk(self.top_k, dim=-1)
            weights = top_logits.softmax(dim=-1)
        y = self.experts(x, idx, weights)

        N, E, k = x.shape[0], self.n_experts, self.top_k
        counts = torch.bincount(idx.flatten(), minlength=E).detach()
        f = counts.float() / (N * k)  # fraction of assignments per expert; detached, as in Switch
        mean_probs = probs.mean(dim=0)
        lse = logits.logsumexp(dim=-1)
        balance, z = E * (f * mean_probs).sum(), lse.square().mean()
        lse_mean, z_value = torch.stack([lse.mean(), z]).detach().tolist()  # one host sync for both
        stats = RoutingStats(
            counts=counts, mean_probs=mean_probs.detach(), tokens=N, top_k=k,
            logsumexp_mean=lse_mean, z_loss=z_value,
        )  # fmt: skip
        return MoEOutput(y.reshape(shape), stats, balance, z)


def moe_aux_loss(outputs: Sequence[MoEOutput], balance_coef: float, z_coef: float) -> Tensor | None:
    """balance_coef · mean_layers(balance) + z_coef · mean_layers(z); None when both coefs are 0.

    The mean over layers (rather than Switch's sum) keeps a coefficient's meaning independent of depth.
    """
    if not outputs or (balance_coef == 0 and z_coef == 0):
        return None
    balance = torch.stack([o.balance_loss for o in outputs]).mean()
    z = torch.stack([o.z_loss for o in outputs]).mean()
    return balance_coef * balance + z_coef * z
