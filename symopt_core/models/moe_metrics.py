"""MoE load-imbalance metrics of ALGORITHMS.md section 13, as pure functions of `RoutingStats`.

For one layer with N tokens, E experts and top-k: c_i assignments to expert i, f_i = c_i / (N·k)
(so Σ f_i = 1), and P_i the mean router softmax probability of expert i.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .output import RoutingStats

__all__ = ["average_load_metrics", "load_metrics"]


def load_metrics(stats: RoutingStats) -> dict[str, float]:
    """Imbalance metrics of one layer; every value is a plain float, ready to log."""
    counts = stats.counts.detach().to("cpu", torch.float64)
    E = counts.numel()
    assignments = stats.tokens * stats.top_k
    f = counts / assignments if assignments > 0 else torch.zeros_like(counts)
    P = stats.mean_probs.detach().to("cpu", torch.float64)
    top = float(f.max())
    return {
        # Switch load-balancing loss E·Σ f_i P_i: 1 when balanced.
        "load_balancing_loss": E * float((f * P).sum()),
        # Coefficient of variation std(f)/mean(f) with the population std: 0 when balanced.
        "load_cv": _cv(f),
        "prob_cv": _cv(P),
        "top_expert_load": top,  # max_i f_i; 1/E when balanced
        "max_mean_load": E * top,  # max/mean load
        "maxvio": E * top - 1.0,  # (max load - balanced load) / balanced load, Wang et al.
        # −Σ f_i log f_i / log E in [0, 1]: 1 when balanced, 0 when one expert takes everything.
        "load_entropy": _normalised_entropy(f),
        "prob_entropy": _normalised_entropy(P),
        "dead_expert_fraction": float((f < 0.1 / E).double().mean()),
        "logsumexp_mean": float(stats.logsumexp_mean),
        "z_loss": float(stats.z_loss),
    }


def average_load_metrics(stats: Sequence[RoutingStats]) -> dict[str, float]:
    """Each metric of `load_metrics` averaged over layers; {} for a dense model."""
    per_layer = [load_metrics(s) for s in stats]
    if not per_layer:
        return {}
    return {key: sum(m[key] for m in per_layer) / len(per_layer) for key in per_layer[0]}


def _cv(x: Tensor) -> float:
    mean = float(x.mean())
    return float(x.std(correction=0)) / mean if mean > 0 else 0.0


def _normalised_entropy(p: Tensor) -> float:
    if p.numel() < 2:
        return 1.0  # one expert: trivially balanced
    # 0·log 0 = 0: only the positive entries contribute.
    q = p[p > 0]
    return float(-(q * q.log()).sum()) / math.log(p.numel())
