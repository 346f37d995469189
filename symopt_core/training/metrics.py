"""Per-class training diagnostics: gradient norms, update RMS, learning rates, MoE load balance."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..models.moe_metrics import average_load_metrics, load_metrics
from ..models.output import RoutingStats

__all__ = ["class_of_params", "grad_norms", "learning_rates", "merge_routing", "moe_metrics", "update_rms"]


def class_of_params(optimizer: torch.optim.Optimizer) -> dict[str, list[Tensor]]:
    """{parameter class: params}, from the `param_class` key build_optimizer puts in each group."""
    classes: dict[str, list[Tensor]] = defaultdict(list)
    for group in optimizer.param_groups:
        classes[str(group.get("param_class", "all"))].extend(group["params"])
    return dict(classes)


def _norm(tensors: Sequence[Tensor]) -> float:
    if not tensors:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(tensors)))))


def grad_norms(classes: dict[str, list[Tensor]]) -> dict[str, float]:
    """L2 norm of the gradients of each class, and the global norm, as `grad_norm[/<class>]`."""
    out: dict[str, float] = {}
    squares = 0.0
    for name, params in classes.items():
        norm = _norm([p.grad for p in params if p.grad is not None])
        out[f"grad_norm/{name}"] = norm
        squares += norm**2
    out["grad_norm"] = math.sqrt(squares)
    return out


def update_rms(classes: dict[str, list[Tensor]], before: dict[str, list[Tensor]]) -> dict[str, float]:
    """Per-entry RMS of the parameter change of one step, per class, as `update_rms/<class>`."""
    out: dict[str, float] = {}
    for name, params in classes.items():
        deltas = torch._foreach_sub([p.detach() for p in params], before[name])
        count = sum(p.numel() for p in params)
        out[f"update_rms/{name}"] = _norm(deltas) / math.sqrt(max(count, 1))
    return out


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The absolute lr each class steps with now, as `lr/<class>`.

    A class's groups share one lr unless their widths differ (embeddings scale with √d); the
    largest is reported then.
    """
    out: dict[str, float] = {}
    for group in optimizer.param_groups:
        key = f"lr/{group.get('param_class', 'all')}"
        out[key] = max(out.get(key, 0.0), float(group["lr"]))
    return out


def merge_routing(micro_batches: Sequence[Sequence[RoutingStats]]) -> list[RoutingStats]:
    """One RoutingStats per MoE layer for a whole step made of several micro-batches.

    Counts and tokens add up; the per-token means (router probabilities P_i, logsumexp and its
    square) are averaged with each micro-batch's token count as its weight, so the result is
    what one forward pass over the whole batch would have reported.
    """
    merged: list[RoutingStats] = []
    for layer in zip(*micro_batches, strict=True):
        tokens = sum(stats.tokens for stats in layer)
        share = [stats.tokens / tokens if tokens else 0.0 for stats in layer]
        merged.append(
            RoutingStats(
                counts=torch.stack([stats.counts for stats in layer]).sum(dim=0),
                mean_probs=torch.stack([w * s.mean_probs for w, s in zip(share, layer, strict=True)]).sum(0),
                tokens=tokens,
                top_k=layer[0].top_k,
                logsumexp_mean=sum(w * s.logsumexp_mean for w, s in zip(share, layer, strict=True)),
                z_loss=sum(w * s.z_loss for w, s in zip(share, layer, strict=True)),
            )
        )
    return merged


def moe_metrics(routing: Sequence[RoutingStats]) -> dict[str, Any]:
    """Load imbalance averaged over MoE layers (`moe/<metric>`) and per layer (`moe/layer<i>/<metric>`)."""
    if not routing:
        return {}
    out = {f"moe/{k}": v for k, v in average_load_metrics(routing).items()}
    for layer, stats in enumerate(routing):
        for key, value in load_metrics(stats).items():
            if key in ("max_mean_load", "load_cv", "dead_expert_fraction"):
                out[f"moe/layer{layer}/{key}"] = value
    return out
