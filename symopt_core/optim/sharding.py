"""The data-parallel optimizer step: each rank orthogonalizes a balanced share of the matrices.

Under data parallelism (DDP) every rank holds the same parameters and, after the gradient
all-reduce, the same gradients, so every rank would compute the same directions. For rules whose
cost grows as m²n (those whose `communication` is "gather": polar, one-sided spectral, hybrid,
NorMuon) that repeated work is most of the optimizer step. Here the matrices are split across
the ranks, balanced by FLOPs (largest first, each to the least-loaded rank), each rank computes
its share batched by shape, and one all-gather per dtype hands every rank every direction, as
dion's and EO's sharded Muon do. The other rules cost O(mn) and run on every rank as before.

`SymOpt._compute_directions(..., batched=True)` on one process is the reference: the parity
tests compare the two on 2 gloo ranks.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Bucket", "ShardStats", "assign_by_cost", "polar_flops", "sharded_directions"]


@dataclass
class Bucket:
    """Same-shape matrices of one rule and options: [N, m, n], computed by `compute` in one call."""

    matrices: Tensor
    compute: Callable[[Tensor], Tensor]
    steps: int  # iterations of the rule's matrix-product loop, for the cost model


@dataclass
class ShardStats:
    """What this rank computed: the per-rank counts the tests and the benchmark read."""

    steps: int = 0
    matrices_computed: int = 0  # by this rank, over all steps
    matrices_total: int = 0  # by all ranks together, over all steps
    flops_computed: float = 0.0
    flops_total: float = 0.0
    last_step: dict[str, float] = field(default_factory=dict)


def polar_flops(m: int, n: int, steps: int) -> float:
    """FLOPs of `steps` quintic Newton–Schulz / Polar Express iterations on an m×n matrix
    (computed on its wide orientation, k = min(m, n) <= l = max): A = X Xᵀ (2k²l), B = bA + cA²
    (2k³), X = aX + B X (2k²l)."""
    k, l = min(m, n), max(m, n)
    return steps * (4.0 * k * k * l + 2.0 * k**3)


def _cost(bucket: Bucket) -> float:
    m, n = bucket.matrices.shape[-2:]
    return polar_flops(int(m), int(n), bucket.steps)


def assign_by_cost(costs: Sequence[float], world_size: int) -> list[int]:
    """The owner rank of each item: largest cost first, each to the least-loaded rank (ties to the
    lower rank, then the earlier item), so every rank derives the same assignment from the same
    costs."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    owners = [0] * len(costs)
    loads = [(0.0, rank) for rank in range(world_size)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, rank = heapq.heappop(loads)
        owners[index] = rank
        heapq.heappush(loads, (load + costs[index], rank))
    return owners


def sharded_directions(
    buckets: Sequence[Bucket], *, group: Any = None, stats: ShardStats | None = None
) -> list[Tensor]:
    """The direction of every matrix of every bucket, each computed by one rank of `group` (the
    default process group if None) and all-gathered; returns one [N, m, n] tensor per bucket."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    units = [(b, i) for b, bucket in enumerate(buckets) for i in range(bucket.matrices.shape[0])]
    costs = [_cost(buckets[b]) for b, _ in units]
    owners = assign_by_cost(costs, world)
    outputs = [torch.empty_like(bucket.matrices) for bucket in buckets]
    mine: dict[int, list[int]] = {}
    for (b, i), owner in zip(units, owners, strict=True):
        if owner == rank:
            mine.setdefault(b, []).append(i)
    for b, indices in mine.items():
        index = torch.tensor(indices, device=buckets[b].matrices.device)
        outputs[b][index] = buckets[b].compute(buckets[b].matrices[index])
    _all_gather_units(outputs, units, owners, group=group, rank=rank, world=world)
    if stats is not None:
        _count(stats, costs, owners, rank)
    return outputs


def _all_gather_units(
    outputs: list[Tensor],
    units: list[tuple[int, int]],
    owners: list[int],
    *,
    group: Any,
    rank: int,
    world: int,
) -> None:
    """Every rank's computed matrices to every rank: per dtype, each rank packs its own in unit
    order into one flat buffer (padded to the longest rank's), one all_gather, then each rank's
    buffer is unpacked in that same order into `outputs`."""
    by_dtype: dict[torch.dtype, list[int]] = {}
    for u, (b, _) in enumerate(units):
        by_dtype.setdefault(outputs[b].dtype, []).append(u)
    for dtype, unit_ids in by_dtype.items():
        per_rank: list[list[int]] = [[] for _ in range(world)]
        for u in unit_ids:
            per_rank[owners[u]].append(u)
        sizes = [sum(outputs[units[u][0]][0].numel() for u in members) for members in per_rank]
        device = outputs[units[unit_ids[0]][0]].device
        mine = [outputs[units[u][0]][units[u][1]].reshape(-1) for u in per_rank[rank]]
        buffer = torch.zeros(max(sizes), dtype=dtype, device=device)
        if mine:
            torch.cat(mine, out=buffer[: sizes[rank]])
        gathered = [torch.empty_like(buffer) for _ in range(world)]
        dist.all_gather(gathered, buffer, group=group)
        for other, members in enumerate(per_rank):
            if other == rank:
                continue
            offset = 0
            for u in members:
                b, i = units[u]
                target = outputs[b][i]
                target.copy_(gathered[other][offset : offset + target.numel()].view_as(target))
                offset += target.numel()


def _count(stats: ShardStats, costs: list[float], owners: list[int], rank: int) -> None:
    computed = [c for c, owner in zip(costs, owners, strict=True) if owner == rank]
    stats.steps += 1
    stats.matrices_computed += len(computed)
    stats.matrices_total += len(costs)
    stats.flops_computed += sum(computed)
    stats.flops_total += sum(costs)
    stats.last_step = {
        "matrices_computed": float(len(computed)),
        "matrices_total": float(len(costs)),
        "flops_computed": sum(computed),
        "flops_total": sum(costs),
    }
